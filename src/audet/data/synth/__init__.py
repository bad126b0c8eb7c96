"""Synthetic FACS benchmark: face videos with known AU labels in BP4D's raw release layout.

``generate(get_config("quick"), "out/", seed=0, workers=2)`` or ``audet synth --preset quick``.
See ``docs/synth.md``.
"""
from .presets import GENERATOR_VERSION, PRESETS, SYNTH_AUS, TARGET_RATES, SynthConfig, get_config
from .writer import CSV_HEADER, generate, load_meta, plan_sequence, render_sequence

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "SYNTH_AUS",
    "TARGET_RATES",
    "SynthConfig",
    "get_config",
    "generate",
    "load_meta",
    "plan_sequence",
    "render_sequence",
    "CSV_HEADER",
]
