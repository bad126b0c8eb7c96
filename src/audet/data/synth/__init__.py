"""Synthetic FACS benchmark: face videos with known AU labels in BP4D's raw release layout.

``generate(get_config("quick"), "out/", seed=0, workers=2)`` or ``audet synth --preset quick``.
See ``docs/synth.md``.
"""
import importlib

# lazy (PEP 562): `audet synth --help` reads the presets without importing the renderer (cv2, scipy)
_WHERE = {name: ".presets" for name in ("GENERATOR_VERSION", "PRESETS", "SYNTH_AUS", "TARGET_RATES", "SynthConfig",
                                        "get_config")}
_WHERE.update({name: ".writer" for name in ("CSV_HEADER", "generate", "load_meta", "plan_sequence", "render_sequence")})


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
