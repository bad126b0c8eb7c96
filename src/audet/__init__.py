"""audet: facial action unit (AU) detection under one protocol.

Public entry points:

- :mod:`audet.facs` -- AU table, dataset AU sets, sub-centre rules, landmark conversions.
- :mod:`audet.geometry` -- face alignment (JAA-Net protocol) and predefined attention maps.
- :mod:`audet.data` -- list files, folds, datasets, transforms, DataModule, preparation, synthetic data.
- :mod:`audet.models` -- ``create_model(name, aus=[...], **args)`` / ``list_models()``.
- :mod:`audet.metrics`, :mod:`audet.losses` -- F1-frame and the papers' losses.
- :class:`audet.Detector` -- AU detection on photos and videos (:mod:`audet.inference`).
"""

from audet._version import __version__

__all__ = ["Detector", "__version__"]


def __getattr__(name):  # lazy: ``import audet`` stays light (no torch) until Detector is used
    if name == "Detector":
        from audet.inference.pipeline import Detector

        return Detector
    raise AttributeError(f"module 'audet' has no attribute {name!r}")
