"""Configuration of the synthetic FACS benchmark: every knob, and the named presets.

A :class:`SynthConfig` holds everything that decides the output; together with the seed it
fixes every byte written. Presets are named sets of overrides on the defaults.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from audet.facs import DATASET_AUS

#: Bumped whenever the same (config, seed) would produce different files.
GENERATOR_VERSION = "1.0"

#: AUs rendered and labelled by the generator (the BP4D and DISFA AUs), in CSV column order.
SYNTH_AUS: tuple[int, ...] = tuple(DATASET_AUS["SYNTH"])

#: Target per-AU occurrence rates (fraction of frames with label 1).
#: "BP4D": AAR Table I (BP4D training sets) for the 12 BP4D AUs; AU9, AU25 and AU26 are not coded
#: in BP4D, so they get plausible values between DISFA's and Aff-Wild2's (AAR Table I).
#: "DISFA": AAR Table I (DISFA) for its 8 AUs; the other AUs get GFT/Aff-Wild2-like low rates.
TARGET_RATES: dict[str, dict[int, float]] = {
    "BP4D": {
        1: 0.211, 2: 0.171, 4: 0.203, 6: 0.462, 7: 0.549, 9: 0.05, 10: 0.594, 12: 0.562,
        14: 0.466, 15: 0.169, 17: 0.344, 23: 0.165, 24: 0.152, 25: 0.35, 26: 0.10,
    },
    "DISFA": {
        1: 0.050, 2: 0.040, 4: 0.150, 6: 0.081, 7: 0.10, 9: 0.043, 10: 0.10, 12: 0.132,
        14: 0.05, 15: 0.04, 17: 0.08, 23: 0.04, 24: 0.03, 25: 0.278, 26: 0.089,
    },
}  # fmt: skip


@dataclass
class SynthConfig:
    """All knobs of ``audet synth`` (see ``docs/synth.md`` for what each one looks like)."""

    preset: str = "default"
    # ---- size of the data set
    subjects: int = 24
    sequences: int = 6
    frames: int = 120
    size: int = 256
    # ---- behaviour (labels)
    rates: str = "BP4D"  # "BP4D", "DISFA" or "1=0.2,2=0.15,..." (unlisted AUs keep BP4D's)
    threshold: float = 2.0  # label = intensity (0..5) >= threshold, like DISFA's >= 2
    tempo: float = 1.0  # episode durations are multiplied by this
    expression: float = 0.7  # fraction of frames inside emotion-prototype events
    habits: float = 1.0  # probability scale of subject-specific extra AUs with an emotion
    au_gain: float = 1.0  # visual strength of every AU (displacement and texture)
    au_gains: str = ""  # per-AU visual strength multipliers, e.g. "6=0.8,23=1.3"
    subtle: float = 1.0  # extra visual strength multiplier for the subtle AUs 2, 7, 23, 24
    missing_labels: float = 0.005  # fraction of label cells written as 9 (unknown), in runs
    # ---- nuisances
    yaw: float = 18.0  # max |yaw| in degrees (2D foreshortening with per-point depth)
    pitch: float = 10.0  # max |pitch| in degrees
    roll: float = 12.0  # max |in-plane rotation| in degrees
    scale_jitter: float = 0.12  # relative face-size spread between sequences (+ small drift)
    shift: float = 0.06  # max face-centre offset, fraction of the image side
    illumination: float = 0.5  # strength of the light gradient and of global brightness changes
    blur: float = 1.0  # max Gaussian blur sigma in pixels at 256 px
    noise: float = 4.0  # max sensor-noise std (0..255 units)
    jpeg_min: int = 70  # JPEG quality range, drawn per sequence
    jpeg_max: int = 95
    clutter: float = 0.5  # background clutter density (0 = plain background)
    occlusion: float = 0.04  # fraction of frames with a hand or bar over part of the face
    glasses: float = 0.15  # probability that a subject wears glasses
    noise_landmarks: float = 0.5  # std of annotation noise on landmarks, pixels at 256 px
    lost_landmarks: float = 0.005  # fraction of frames whose landmarks are lost (empty pred)
    extras: dict[str, Any] = field(default_factory=dict)  # free-form, recorded in meta

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def total_frames(self) -> int:
        return self.subjects * self.sequences * self.frames

    def target_rates(self) -> dict[int, float]:
        """Per-AU target occurrence rates parsed from :attr:`rates`."""
        return parse_rates(self.rates)

    def au_gain_map(self) -> dict[int, float]:
        """Per-AU visual strength multipliers parsed from :attr:`au_gains` (default 1)."""
        out = {au: 1.0 for au in SYNTH_AUS}
        for item in str(self.au_gains).split(","):
            item = item.strip()
            if not item:
                continue
            try:
                au_s, g_s = item.split("=")
                au, g = int(au_s.strip().upper().lstrip("AU")), float(g_s)
            except ValueError:
                raise ValueError(f"bad --au-gains item {item!r}; use e.g. '6=0.8,23=1.3'") from None
            if au not in out or not 0 <= g <= 5:
                raise ValueError(f"--au-gains: need a generated AU and 0 <= gain <= 5, got {item!r}")
            out[au] = g
        return out

    def validate(self) -> "SynthConfig":
        if self.subjects < 1 or self.sequences < 1 or self.frames < 1:
            raise ValueError("subjects, sequences and frames must be >= 1")
        if self.subjects > 999:
            raise ValueError("at most 999 subjects (names F001..F999 / M001..M999)")
        if self.size < 64:
            raise ValueError(f"size must be >= 64 pixels, got {self.size}")
        if not 1 <= self.jpeg_min <= self.jpeg_max <= 100:
            raise ValueError("JPEG qualities must satisfy 1 <= min <= max <= 100")
        if not 0.0 < self.threshold <= 5.0:
            raise ValueError("threshold must be in (0, 5]")
        for name in ("expression", "missing_labels", "occlusion", "glasses", "lost_landmarks"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        for name in ("tempo", "au_gain", "subtle"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("yaw", "pitch", "roll", "scale_jitter", "shift", "illumination", "blur",
                     "noise", "clutter", "noise_landmarks", "habits"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.yaw > 45 or self.pitch > 30:
            raise ValueError("yaw must be <= 45 and pitch <= 30 degrees (2D approximation)")
        self.target_rates()
        self.au_gain_map()
        return self


def parse_rates(spec: str) -> dict[int, float]:
    """``"BP4D"``, ``"DISFA"`` or ``"1=0.2,12=0.5"`` (others from BP4D) -> AU -> rate."""
    key = str(spec).strip()
    for name, table in TARGET_RATES.items():
        if key.casefold() == name.casefold():
            return dict(table)
    out = dict(TARGET_RATES["BP4D"])
    for item in key.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            au_s, rate_s = item.split("=")
            au, rate = int(au_s.strip().upper().lstrip("AU")), float(rate_s)
        except ValueError:
            raise ValueError(
                f"bad --rates item {item!r}; use BP4D, DISFA or e.g. '1=0.2,12=0.5'"
            ) from None
        if au not in out:
            raise ValueError(f"--rates: AU{au} is not generated; AUs: {list(SYNTH_AUS)}")
        if not 0.0 <= rate < 0.95:
            raise ValueError(f"--rates: rate of AU{au} must be in [0, 0.95), got {rate}")
        out[au] = rate
    return out


#: Named presets: overrides of the :class:`SynthConfig` defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # seconds: for unit tests and smoke runs
    "test": dict(subjects=4, sequences=2, frames=12, size=128),
    # ~1 minute on 2 cores: 10 subjects x 4 sequences x 120 frames = 4,800 frames
    "quick": dict(subjects=10, sequences=4, frames=120, size=256),
    # calibration / experiments: 24 x 6 x 120 = 17,280 frames
    "default": dict(subjects=24, sequences=6, frames=120, size=256),
    # 48 x 8 x 120 = 46,080 frames
    "large": dict(subjects=48, sequences=8, frames=120, size=256),
}


def get_config(preset: str = "default", **overrides: Any) -> SynthConfig:
    """The preset's config with ``overrides`` (None values are ignored) applied and validated."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    kw: dict[str, Any] = dict(PRESETS[preset])
    names = {f.name for f in dataclasses.fields(SynthConfig)}
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in names:
            raise ValueError(f"unknown synth option {k!r}")
        kw[k] = v
    return SynthConfig(preset=preset, **kw).validate()
