"""Moved to :mod:`audet.faces` (a base-layer module that dataset preparation uses too); this alias
module keeps ``audet.inference.faces`` imports working for one release."""
from audet.faces import *  # noqa: F401,F403
from audet.faces import DETECTORS, DlibHOGDetector, MTCNNDetector, make_detector  # noqa: F401
