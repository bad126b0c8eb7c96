"""Synthetic subjects: identity (face shape, proportions, colours, hair, accessories) and habits.

Everything is drawn from ``rng_for(seed, STREAM_IDENTITY, subject_index)`` so a subject's
identity depends only on the seed and its index, never on the preset or the worker count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .presets import SYNTH_AUS, SynthConfig

STREAM_IDENTITY = 1
STREAM_HABITS = 2
STREAM_SEQUENCE = 3


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """Independent, reproducible generator for ``(seed, *keys)``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *map(int, keys)]))


def subject_names(n: int) -> list[str]:
    """BP4D-style names, alternating sexes: F001, M001, F002, M002, ..."""
    out = []
    for i in range(n):
        out.append(f"{'F' if i % 2 == 0 else 'M'}{i // 2 + 1:03d}")
    return out


#: Skin albedos (RGB 0..255) from light to dark; identities interpolate between neighbours.
SKIN_TONES = np.array(
    [
        [246, 214, 196],
        [236, 196, 170],
        [224, 178, 148],
        [206, 156, 120],
        [186, 134, 100],
        [164, 114, 82],
        [142, 96, 68],
        [120, 80, 56],
    ],
    dtype=np.float64,
)
HAIR_COLOURS = np.array(
    [[22, 18, 16], [48, 32, 24], [82, 56, 36], [120, 84, 50], [168, 128, 80], [200, 170, 120],
     [140, 60, 30], [120, 118, 116]],
    dtype=np.float64,
)  # fmt: skip
IRIS_COLOURS = np.array(
    [[60, 40, 28], [96, 64, 38], [70, 100, 130], [80, 110, 80], [40, 30, 24]], dtype=np.float64
)
HAIR_STYLES = ("short", "long", "bangs", "bald", "curly", "bun")


@dataclass
class Identity:
    """Appearance parameters of one subject (face units: eye centres 1 apart)."""

    name: str
    sex: str  # "F" or "M"
    # geometry (multiplicative factors around 1, or offsets in face units)
    face_width: float = 1.0
    face_length: float = 1.0
    jaw_width: float = 1.0  # lower-face width relative to the cheekbones
    chin_width: float = 1.0
    eye_size: float = 1.0
    eye_open: float = 1.0  # vertical aperture
    eye_spacing: float = 0.0  # offset of the eyes (outwards +)
    eye_tilt: float = 0.0  # canthal tilt (outer corner up +), face units
    brow_height: float = 0.0  # offset (up +)
    brow_arch: float = 0.0
    brow_thickness: float = 1.0
    brow_slant: float = 0.0  # inner end up (+) / down (-)
    nose_length: float = 1.0
    nose_width: float = 1.0
    mouth_width: float = 1.0
    mouth_height: float = 0.0  # vertical offset (down +)
    upper_lip: float = 1.0
    lower_lip: float = 1.0
    asymmetry: float = 0.0  # scale of a fixed per-point asymmetry field
    shape_noise: list[float] = field(default_factory=list)  # (68*2,) fixed jitter, face units
    # colours (RGB)
    skin: tuple[float, float, float] = (220, 175, 145)
    lip: tuple[float, float, float] = (180, 100, 95)
    hair: tuple[float, float, float] = (40, 30, 22)
    brow: tuple[float, float, float] = (50, 36, 28)
    iris: tuple[float, float, float] = (70, 50, 30)
    shirt: tuple[float, float, float] = (60, 80, 120)
    # hair and accessories
    hair_style: str = "short"
    hairline: float = 0.0  # offset of the hairline (up +)
    hair_volume: float = 1.0
    beard: float = 0.0  # 0 = none, up to 1 = dense stubble/beard shadow
    glasses: bool = False
    glasses_shape: str = "round"
    age: float = 0.3  # 0..1, depth of permanent wrinkles
    moles: list[list[float]] = field(default_factory=list)  # [x, y, radius] face units
    # AU rendering per subject
    expressivity: float = 1.0  # global multiplier of visual AU strength
    au_gain: dict[int, float] = field(default_factory=dict)  # per-AU multiplier
    au_asym: dict[int, float] = field(default_factory=dict)  # >0: image-left side stronger
    wrinkle_gain: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["au_gain"] = {str(k): round(v, 4) for k, v in self.au_gain.items()}
        d["au_asym"] = {str(k): round(v, 4) for k, v in self.au_asym.items()}
        d["shape_noise"] = [round(v, 5) for v in self.shape_noise]
        for k, v in list(d.items()):
            if isinstance(v, float):
                d[k] = round(v, 5)
            elif isinstance(v, tuple):
                d[k] = [round(float(x), 2) for x in v]
        return d


def _mix(table: np.ndarray, t: float) -> np.ndarray:
    t = float(np.clip(t, 0, len(table) - 1))
    i = min(int(t), len(table) - 2)
    f = t - i
    return table[i] * (1 - f) + table[i + 1] * f


def sample_identity(rng: np.random.Generator, name: str, cfg: SynthConfig | None = None,
                    index: int | None = None) -> Identity:
    """A random subject; ``name`` starting with F or M sets the sex.

    With ``index`` (the subject's position) skin tones are spread evenly over the palette
    (a low-discrepancy sequence plus jitter), so small sets still cover light to dark skin.
    """
    sex = "F" if name.upper().startswith("F") else "M"
    male = sex == "M"
    n = rng.normal
    u = rng.uniform

    def tri(lo, hi):
        return float(np.clip(n((lo + hi) / 2, (hi - lo) / 4), lo, hi))

    if index is None:
        skin_t = u(0, len(SKIN_TONES) - 1)
    else:
        skin_t = ((index * 0.6180339887 + u(-0.12, 0.12)) % 1.0) * (len(SKIN_TONES) - 1)
    skin = _mix(SKIN_TONES, skin_t) * u(0.96, 1.04, 3)
    # lips: skin pulled towards red and darker; some female subjects wear lipstick
    lip = skin * np.array([0.82, 0.55, 0.55]) + np.array([20, 0, 5])
    if not male and rng.random() < 0.3:
        lip = np.array([150, 50, 60]) * u(0.8, 1.05) + skin * 0.2
    if rng.random() < 0.12:
        hair_t = 7.0  # grey
    else:
        # darker hair for darker skin, mostly
        hair_t = float(np.clip(n(skin_t * 0.35, 1.3), 0, 6))
    hair = _mix(HAIR_COLOURS, hair_t)
    brow = hair * 0.8 + skin * 0.2 if hair_t < 4 else hair * 0.6 + np.array([40, 30, 20]) * 0.4
    iris = IRIS_COLOURS[rng.integers(0, len(IRIS_COLOURS))] * u(0.8, 1.2)
    shirt = rng.integers(20, 230, 3).astype(np.float64)

    styles_f = ("long", "long", "bangs", "bun", "curly", "short")
    styles_m = ("short", "short", "curly", "bald", "short", "long")
    style = str(rng.choice(styles_m if male else styles_f))
    age = float(np.clip(rng.beta(1.6, 3.0), 0, 1))
    glasses_p = cfg.glasses if cfg is not None else 0.15

    ident = Identity(
        name=name,
        sex=sex,
        face_width=tri(0.9, 1.1) * (1.03 if male else 0.98),
        face_length=tri(0.9, 1.12) * (1.03 if male else 0.98),
        jaw_width=tri(0.85, 1.15) * (1.05 if male else 0.95),
        chin_width=tri(0.75, 1.3),
        eye_size=tri(0.85, 1.15),
        eye_open=tri(0.8, 1.25),
        eye_spacing=tri(-0.05, 0.05),
        eye_tilt=tri(-0.04, 0.05),
        brow_height=tri(-0.05, 0.06) + (0.0 if male else 0.02),
        brow_arch=tri(-0.04, 0.06) + (0.0 if male else 0.02),
        brow_thickness=tri(0.6, 1.3) * (1.2 if male else 0.85),
        brow_slant=tri(-0.04, 0.04),
        nose_length=tri(0.88, 1.12),
        nose_width=tri(0.8, 1.3),
        mouth_width=tri(0.85, 1.15),
        mouth_height=tri(-0.04, 0.05),
        upper_lip=tri(0.6, 1.4) * (0.9 if male else 1.05),
        lower_lip=tri(0.7, 1.35),
        asymmetry=tri(0.0, 1.0),
        shape_noise=[float(v) for v in rng.normal(0, 0.008, 136)],
        skin=tuple(float(v) for v in np.clip(skin, 0, 255)),
        lip=tuple(float(v) for v in np.clip(lip, 0, 255)),
        hair=tuple(float(v) for v in np.clip(hair, 0, 255)),
        brow=tuple(float(v) for v in np.clip(brow, 0, 255)),
        iris=tuple(float(v) for v in np.clip(iris, 0, 255)),
        shirt=tuple(float(v) for v in shirt),
        hair_style=style,
        hairline=tri(-0.08, 0.12) - (0.1 * age if male else 0.0),
        hair_volume=tri(0.7, 1.3),
        beard=float(u(0.2, 1.0)) if male and rng.random() < 0.35 else 0.0,
        glasses=bool(rng.random() < glasses_p),
        glasses_shape=str(rng.choice(("round", "rect"))),
        age=age,
        moles=[[float(u(-0.9, 0.9)), float(u(-0.6, 1.5)), float(u(0.012, 0.03))]
               for _ in range(int(rng.integers(0, 4)))],  # fmt: skip
        expressivity=float(np.clip(n(1.0, 0.12), 0.75, 1.3)),
        au_gain={au: float(np.clip(n(1.0, 0.15), 0.6, 1.4)) for au in SYNTH_AUS},
        au_asym={au: float(np.clip(n(0.0, 0.12), -0.35, 0.35)) for au in SYNTH_AUS},
        wrinkle_gain=float(np.clip(n(1.0, 0.25), 0.5, 1.6)) * (0.8 + 0.5 * age),
    )
    return ident


# ----------------------------------------------------------------------------------------------
# Habits: the subject confounder (CISNet): extra AUs a subject shows with an emotion, AUs they
# rarely produce, individual AU activity, and resting traces.
# ----------------------------------------------------------------------------------------------

#: Candidate extra AUs per emotion (what some people add to a prototype).
HABIT_CANDIDATES: dict[str, tuple[int, ...]] = {
    "happiness": (1, 2, 10, 14, 25, 26, 17, 24),
    "sadness": (17, 24, 23, 14, 7, 2),
    "surprise": (4, 25, 7, 12, 10),
    "fear": (7, 25, 15, 24, 26, 10),
    "anger": (10, 9, 25, 15, 1),
    "disgust": (4, 7, 17, 15, 14, 25),
}


@dataclass
class Habits:
    """Subject-specific behaviour (recorded in ``synth_meta.json``)."""

    extras: dict[str, list[int]] = field(default_factory=dict)  # emotion -> extra AUs
    extra_prob: float = 0.7  # chance that the extras show in a given event
    suppressed: list[int] = field(default_factory=list)  # AUs this subject rarely shows
    activity: dict[int, float] = field(default_factory=dict)  # spontaneous-AU rate multiplier
    resting: dict[int, float] = field(default_factory=dict)  # constant trace intensity (< 2)
    favourite: str = "happiness"  # emotion the subject shows more often

    def to_dict(self) -> dict[str, Any]:
        return {
            "extras": {k: list(v) for k, v in self.extras.items()},
            "extra_prob": round(self.extra_prob, 4),
            "suppressed": list(self.suppressed),
            "activity": {str(k): round(v, 4) for k, v in self.activity.items()},
            "resting": {str(k): round(v, 4) for k, v in self.resting.items()},
            "favourite": self.favourite,
        }


def sample_habits(rng: np.random.Generator, cfg: SynthConfig) -> Habits:
    emotions = list(HABIT_CANDIDATES)
    extras: dict[str, list[int]] = {}
    # each subject has a habit for 1-3 emotions
    for emo in rng.choice(emotions, size=int(rng.integers(1, 4)), replace=False):
        cands = HABIT_CANDIDATES[str(emo)]
        k = int(rng.integers(1, 3))
        extras[str(emo)] = sorted(int(a) for a in rng.choice(cands, size=k, replace=False))
    suppressed = []
    if rng.random() < 0.25:  # e.g. a subject who hardly raises the cheeks (CISNet Fig. 1)
        suppressed = [int(rng.choice([6, 1, 2, 14, 17, 10]))]
    activity = {au: float(np.exp(rng.normal(0, 0.45))) for au in SYNTH_AUS}
    resting: dict[int, float] = {}
    for au in rng.choice([4, 17, 14, 7, 24, 15, 1], size=int(rng.integers(0, 3)), replace=False):
        resting[int(au)] = float(rng.uniform(0.4, min(1.6, 0.85 * cfg.threshold)))
    return Habits(
        extras=extras,
        extra_prob=float(np.clip(rng.uniform(0.5, 0.9) * cfg.habits, 0, 1)),
        suppressed=suppressed,
        activity=activity,
        resting=resting,
        favourite=str(rng.choice(emotions)),
    )


def make_subject(seed: int, index: int, cfg: SynthConfig) -> tuple[Identity, Habits]:
    """Identity and habits of subject ``index`` (name from :func:`subject_names`)."""
    name = subject_names(index + 1)[index]
    ident = sample_identity(rng_for(seed, STREAM_IDENTITY, index), name, cfg, index=index)
    habits = sample_habits(rng_for(seed, STREAM_HABITS, index), cfg)
    return ident, habits
