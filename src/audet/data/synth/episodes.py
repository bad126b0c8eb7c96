"""AU episodes over time: onset / apex / offset ramps, emotion co-occurrence, subject habits.

Sources of AU activity in a sequence (all combined per AU by the maximum intensity):

* **emotion events** (AUNet Table II, :data:`audet.facs.EMOTION_PROTOTYPES`): a random subset of
  the alternatives of one prototype is switched on together (e.g. happiness -> AU6+AU12 and/or
  AU7+AU12). Each sequence (task) has a dominant emotion, like BP4D's tasks T1..T8.
* **habits** (the subject confounder of CISNet): extra AUs a given subject adds to an emotion,
  AUs the subject hardly shows, resting traces below the label threshold.
* **spontaneous single-AU episodes**: an alternating renewal process per AU whose rate is
  calibrated so the overall label rate of each AU lands near its target (AAR Table I for BP4D).
* **anatomical couplings**: AU26 -> AU25, AU2 -> AU1, strong AU10/AU12 -> AU25, ...

Intensities are on the FACS 0..5 scale; the label of a frame is ``intensity >= threshold``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from audet.facs import EMOTION_PROTOTYPES

from .identity import Habits, rng_for
from .presets import SYNTH_AUS, TARGET_RATES, SynthConfig

A = len(SYNTH_AUS)
AU_INDEX = {au: i for i, au in enumerate(SYNTH_AUS)}

#: dominant emotion of task Tk (BP4D's tasks: amusement, sadness, startle, embarrassment, fear,
#: pain, anger, disgust; pain and embarrassment are mapped to the closest prototype)
TASK_EMOTIONS = ("happiness", "sadness", "surprise", "happiness", "fear", "disgust", "anger",
                 "disgust")  # fmt: skip
#: overall emotion mix of events that are not the task's dominant emotion
EMOTION_MIX = {"happiness": 0.38, "sadness": 0.12, "surprise": 0.10, "fear": 0.08,
               "anger": 0.16, "disgust": 0.16}  # fmt: skip
DOMINANT_P = 0.45
ALT_P = 0.7  # probability that each alternative of a prototype joins an event
FAVOURITE_P = 0.15

#: mean length (frames at tempo 1) of spontaneous episodes per AU; frequent AUs last longer
SPONT_LENGTH = {au: 24.0 * (1.0 + 2.5 * r) for au, r in TARGET_RATES["BP4D"].items()}
EVENT_LENGTH = 38.0  # mean emotion-event length (frames at tempo 1)

#: (source AU, min peak, target AU, probability, peak factor)
COUPLINGS = (
    (26, 0.0, 25, 0.9, 1.0),
    (2, 0.0, 1, 0.7, 0.9),
    (1, 0.0, 2, 0.35, 0.8),
    (10, 3.0, 25, 0.35, 0.8),
    (12, 3.5, 25, 0.3, 0.8),
    (12, 2.5, 6, 0.55, 0.9),
    (9, 0.0, 4, 0.3, 0.6),
    (9, 0.0, 10, 0.4, 0.8),
    # BP4D-like smiles: AU6, AU7, AU10, AU12 and AU14 co-occur a lot
    (12, 2.5, 10, 0.45, 0.8),
    (12, 2.5, 14, 0.3, 0.8),
    (6, 0.0, 7, 0.5, 0.9),
    # anger / pain: lowered brows with tightened lids; pressed lips with a raised chin
    (4, 2.0, 7, 0.45, 0.9),
    (24, 0.0, 17, 0.45, 0.9),
    (17, 2.0, 24, 0.25, 0.8),
)


@dataclass
class Episode:
    """One AU episode; frame indices are 0-based within the sequence and may lie outside it."""

    au: int
    start: int  # first frame of the onset ramp
    apex_start: int  # first frame at the peak
    apex_end: int  # first frame of the offset ramp
    end: int  # one past the last frame with intensity > 0
    peak: float  # intensity at apex, 0..5
    source: str  # "emotion:<name>", "habit:<name>", "single", "coupled:<au>", "resting"

    def profile(self) -> np.ndarray:
        """Intensity on frames ``start .. end - 1`` (monotone up, flat, monotone down)."""
        n_on = self.apex_start - self.start
        n_ap = self.apex_end - self.apex_start
        n_off = self.end - self.apex_end
        on = _smooth((np.arange(n_on) + 1.0) / (n_on + 1.0))
        off = _smooth((n_off - np.arange(n_off)) / (n_off + 1.0))
        return self.peak * np.concatenate([on, np.ones(n_ap), off])

    def to_list(self) -> list[Any]:
        return [self.au, self.start, self.apex_start, self.apex_end, self.end,
                round(float(self.peak), 3), self.source]  # fmt: skip


def _smooth(t: np.ndarray) -> np.ndarray:
    """Smoothstep on t in [0, 1] (callers pass values inside (0, 1))."""
    return t * t * (3.0 - 2.0 * t)


def _make_episode(rng, au, start, length, peak, source) -> Episode:
    length = max(3, int(round(length)))
    f_on = rng.uniform(0.15, 0.35)
    f_off = rng.uniform(0.2, 0.4)
    n_on = max(1, int(round(length * f_on)))
    n_off = max(1, int(round(length * f_off)))
    n_ap = max(1, length - n_on - n_off)
    s = int(start)
    peak = min(5.0, max(0.3, float(peak)))
    return Episode(int(au), s, s + n_on, s + n_on + n_ap, s + n_on + n_ap + n_off, peak, source)


@dataclass
class BehaviourParams:
    """Calibrated parameters of the spontaneous process (per AU)."""

    own_rate: dict[int, float]  # label rate each AU's spontaneous process should contribute
    gap_mean: dict[int, float]  # mean gap (frames) between its episodes; inf = never
    predicted: dict[int, float]  # rates measured on the calibration simulation
    target: dict[int, float]

    def to_dict(self) -> dict[str, Any]:
        def r(d):
            return {str(k): (round(v, 4) if np.isfinite(v) else None) for k, v in d.items()}

        return {"own_rate": r(self.own_rate), "gap_mean": r(self.gap_mean),
                "predicted": r(self.predicted), "target": r(self.target)}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Simulation of one sequence
# ----------------------------------------------------------------------------------------------


def _peak_single(rng) -> float:
    return 1.0 + 4.0 * rng.beta(1.5, 1.5)


def simulate_episodes(
    rng: np.random.Generator,
    n_frames: int,
    habits: Habits,
    task_index: int,
    params: BehaviourParams,
    cfg: SynthConfig,
) -> list[Episode]:
    """Episodes of every source for one sequence of ``n_frames`` frames."""
    tempo = cfg.tempo
    pad = int(np.ceil(120 * tempo))
    t0, t1 = -pad, n_frames + pad
    eps: list[Episode] = []
    dominant = TASK_EMOTIONS[task_index % len(TASK_EMOTIONS)]
    emos = list(EMOTION_MIX)
    mix = np.array([EMOTION_MIX[e] for e in emos])
    mix = mix / mix.sum()

    # --- emotion events
    F = cfg.expression
    if F > 0:
        e_len = EVENT_LENGTH * tempo
        gap_mean = e_len * (1.0 - F) / F if F < 1 else 0.0
        t = t0 + int(rng.exponential(gap_mean + 1.0))
        while t < t1:
            length = float(np.exp(rng.normal(np.log(e_len), 0.4)))
            u = rng.random()
            if u < DOMINANT_P:
                emo = dominant
            elif u < DOMINANT_P + FAVOURITE_P:
                emo = habits.favourite
            else:
                emo = emos[int(rng.choice(len(emos), p=mix))]
            alts = EMOTION_PROTOTYPES[emo]
            chosen = [a for a in alts if rng.random() < ALT_P]
            if not chosen:
                chosen = [alts[int(rng.integers(len(alts)))]]
            aus = sorted({au for alt in chosen for au in alt})
            strength = rng.uniform(1.6, 5.0)
            for au in aus:
                if au in habits.suppressed and rng.random() < 0.85:
                    continue
                eps.append(_make_episode(
                    rng, au, t + rng.integers(0, 1 + int(4 * tempo)),
                    length * rng.uniform(0.75, 1.1),
                    strength * rng.uniform(0.75, 1.1) + rng.normal(0, 0.3), f"emotion:{emo}"))
            extra = habits.extras.get(emo, [])
            if extra and rng.random() < habits.extra_prob:
                for au in extra:
                    eps.append(_make_episode(
                        rng, au, t + rng.integers(0, 1 + int(6 * tempo)),
                        length * rng.uniform(0.6, 1.0),
                        strength * rng.uniform(0.6, 1.0) + rng.normal(0, 0.3), f"habit:{emo}"))
            t += int(length) + 1 + int(rng.exponential(gap_mean + 1e-9))

    # --- spontaneous single-AU episodes (alternating renewal process)
    for au in SYNTH_AUS:
        g = params.gap_mean.get(au, np.inf)
        if not np.isfinite(g):
            continue
        act = habits.activity.get(au, 1.0) * (0.1 if au in habits.suppressed else 1.0)
        g = g / max(act, 1e-3)
        mean_len = SPONT_LENGTH[au] * tempo
        t = t0 + int(rng.exponential(g + mean_len)) - int(mean_len)
        while t < t1:
            length = float(np.exp(rng.normal(np.log(mean_len) - 0.1, 0.45)))
            ep = _make_episode(rng, au, t, length, _peak_single(rng), "single")
            eps.append(ep)
            t = ep.end + int(rng.exponential(g)) + 1

    # --- anatomical couplings (from every non-coupled episode)
    coupled = []
    for ep in eps:
        for src, min_peak, dst, p, fac in COUPLINGS:
            if ep.au == src and ep.peak >= min_peak and rng.random() < p:
                coupled.append(Episode(dst, ep.start - 1, ep.apex_start, ep.apex_end, ep.end + 1,
                                       float(np.clip(ep.peak * fac, 0.3, 5.0)), f"coupled:{src}"))
    eps.extend(coupled)
    # keep the ones that touch the sequence
    return [e for e in eps if e.end > 0 and e.start < n_frames]


def rasterize(episodes: list[Episode], n_frames: int, habits: Habits | None = None,
              own_only: bool | None = None) -> np.ndarray:
    """(n_frames, 15) intensity: maximum over episodes (and resting traces).

    ``own_only``: None = all episodes; True = only "single"; False = all but "single".
    """
    out = np.zeros((n_frames, A), dtype=np.float64)
    if habits is not None and own_only is not True:
        for au, v in habits.resting.items():
            out[:, AU_INDEX[au]] = v
    for e in episodes:
        if own_only is True and e.source != "single":
            continue
        if own_only is False and e.source == "single":
            continue
        prof = e.profile()
        a, b = max(e.start, 0), min(e.end, n_frames)
        if a >= b:
            continue
        seg = prof[a - e.start : b - e.start]
        col = AU_INDEX[e.au]
        np.maximum(out[a:b, col], seg, out=out[a:b, col])
    return out


def labels_from_intensity(intensity: np.ndarray, threshold: float) -> np.ndarray:
    return (intensity >= threshold - 1e-9).astype(np.int8)


def add_missing(rng: np.random.Generator, labels: np.ndarray, fraction: float) -> np.ndarray:
    """Copy of ``labels`` with rare runs of 9 (unknown): single AUs or whole frames."""
    out = labels.copy()
    if fraction <= 0:
        return out
    T = out.shape[0]
    cells_per_run = 12.5 * (0.7 * 1 + 0.3 * A)
    n_runs = rng.poisson(fraction * T * A / cells_per_run)
    for _ in range(int(n_runs)):
        length = int(rng.integers(5, 21))
        s = int(rng.integers(0, max(1, T - 1)))
        if rng.random() < 0.7:
            out[s : s + length, int(rng.integers(A))] = 9
        else:
            out[s : s + length, :] = 9
    return out


# ----------------------------------------------------------------------------------------------
# Calibration of the spontaneous process against target rates
# ----------------------------------------------------------------------------------------------


def _on_fraction_stats(au: int, cfg: SynthConfig) -> tuple[float, float]:
    """E[label-on frames] and E[length] of one spontaneous episode of ``au``."""
    rng = rng_for(7, au, 99)
    mean_len = SPONT_LENGTH[au] * cfg.tempo
    on = tot = 0.0
    n = 400
    for _ in range(n):
        length = float(np.exp(rng.normal(np.log(mean_len) - 0.1, 0.45)))
        ep = _make_episode(rng, au, 0, length, _peak_single(rng), "single")
        prof = ep.profile()
        on += float((prof >= cfg.threshold - 1e-9).sum())
        tot += len(prof) + 1  # +1: the renewal step
    return on / n, tot / n


def _gap_for(q: float, e_on: float, e_len: float) -> float:
    if q <= 1e-4:
        return float("inf")
    return max(1.0, e_on / q - e_len)


@functools.lru_cache(maxsize=16)
def _calibrate_cached(key: tuple, seed: int) -> BehaviourParams:
    from .identity import make_subject

    cfg = SynthConfig(**dict(key)).validate()
    target = cfg.target_rates()
    stats = {au: _on_fraction_stats(au, cfg) for au in SYNTH_AUS}
    # The simulation uses the habits of the actual subjects (the main source of variance
    # between data sets) with independent episode streams, replicated up to ~10k frames.
    # Sequences start mid-behaviour (episodes are simulated from well before frame 0), so
    # rates do not depend on the sequence length and a fixed length is used.
    n_frames = 120
    habits = [make_subject(seed, i, cfg)[1] for i in range(cfg.subjects)]
    pairs = [(i, q) for i in range(cfg.subjects) for q in range(cfg.sequences)]
    reps = max(1, int(np.ceil(10000 / (len(pairs) * n_frames))))
    own = {au: 0.0 for au in SYNTH_AUS}
    tgt = np.array([target[au] for au in SYNTH_AUS])

    def run(own_rates):
        gaps = {au: _gap_for(own_rates[au], *stats[au]) for au in SYNTH_AUS}
        params = BehaviourParams(own_rates, gaps, {}, target)
        tot = np.zeros(A)
        other = np.zeros(A)
        count = 0
        for r in range(reps):
            for i, q in pairs:
                rng = rng_for(12345, r, i, q)
                eps = simulate_episodes(rng, n_frames, habits[i], q, params, cfg)
                lab_all = labels_from_intensity(rasterize(eps, n_frames, habits[i]), cfg.threshold)
                lab_other = labels_from_intensity(rasterize(eps, n_frames, habits[i], own_only=False),
                                                  cfg.threshold)  # fmt: skip
                tot += lab_all.sum(0)
                other += lab_other.sum(0)
                count += n_frames
        return tot / count, other / count, gaps

    rates, other, gaps = run(own)
    for _ in range(2):
        c = np.clip(other, 0, 0.99)
        new = {}
        for i, au in enumerate(SYNTH_AUS):
            if own[au] == 0.0:
                q = (tgt[i] - c[i]) / (1 - c[i])
            else:
                q = own[au] + (tgt[i] - rates[i]) / (1 - c[i])
            new[au] = float(np.clip(q, 0.0, 0.92))
        own = new
        rates, other, gaps = run(own)
    return BehaviourParams(own, gaps, {au: float(rates[i]) for i, au in enumerate(SYNTH_AUS)},
                           target)


def _behaviour_key(cfg: SynthConfig) -> tuple:
    keep = ("rates", "threshold", "tempo", "expression", "habits", "subjects", "sequences")
    return tuple((k, getattr(cfg, k)) for k in keep)


def calibrate(cfg: SynthConfig, seed: int = 0) -> BehaviourParams:
    """Rates of the spontaneous process so that overall label rates approach the targets.

    Simulates label timelines of the data set's own subjects (their habits depend on ``seed``)
    with a fixed calibration stream; deterministic and cached per behaviour-relevant config.
    """
    return _calibrate_cached(_behaviour_key(cfg), int(seed))
