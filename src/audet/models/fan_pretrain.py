"""Pretraining AU-Net's 2-stack FAN on landmarks (heatmap regression), without downloads.

AU-Net (AUNet section IV-A) builds its basis on a FAN pretrained for face alignment (2DFAN-2).
Where those weights are not at hand (no downloads in audet), :func:`train_fan` trains the same
network (:class:`audet.models.layers.fan.FAN`) on a prepared data set's landmarks, as
face-alignment networks are trained (Bulat & Tzimiropoulos 2017): one Gaussian heatmap per
landmark at a quarter of the input side, both stacks supervised (intermediate supervision), mean
squared error. The prepared data hold the 49 inner points (:data:`audet.facs.KEEP_68_TO_49` of
the 68-point layout); the other 19 channels (jaw 0-16, inner mouth corners 60 and 64) get zero
targets, so the summed heatmaps M of AU-Net's basis cover brows, eyes, nose and mouth.

Inputs are the frames as AUNet's FAN receives them at ``img_size=size``
(:func:`fan_preprocess`: AUNet's own preprocessing), with AUNet's random crop and flip plus a colour jitter of the FAN's own (brightness and contrast 0.5;
AUNet's paper lists none for the detector); landmarks follow the pixels, :mod:`audet.data.transforms`.

:func:`decode_heatmaps` reads landmarks back (arg-max plus a quarter-pixel shift towards the
larger neighbour, the FAN convention); :func:`evaluate_nme` scores them: NME = mean point error
over the 49 points / inter-ocular distance (outer eye corners, 49-point indices 19 and 28), in %.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from audet.facs import KEEP_68_TO_49
from audet.models.layers.fan import FAN

__all__ = ["fan_preprocess", "heatmap_targets", "decode_heatmaps", "nme", "train_fan", "evaluate_nme",
           "OUTER_EYE_CORNERS_49"]

log = logging.getLogger(__name__)

#: 49-point indices of the outer eye corners (68-point 36 and 45): the inter-ocular distance.
OUTER_EYE_CORNERS_49 = (19, 28)


def fan_preprocess(size: int) -> dict:
    """AUNet's preprocessing at ``img_size=size`` (what its FAN sees), without building AUNet."""
    from audet.models.aunet import _preprocess

    return _preprocess(int(size), "paper", None)


def heatmap_targets(landmarks49: torch.Tensor, size: int, sigma: float = 1.0, num_landmarks: int = 68) -> torch.Tensor:
    """``(B, 68, size/4, size/4)`` targets: a unit-peak Gaussian (std ``sigma`` heatmap pixels) at each
    of the 49 landmarks (input pixels ``(B, 49, 2)``, x then y), zero for the other 19 channels.

    Pixel centres: input pixel x maps to heatmap coordinate ``(x + 0.5) / 4 - 0.5``.
    """
    h = int(size) // 4
    pts = (landmarks49.float() + 0.5) / 4.0 - 0.5  # (B, 49, 2)
    grid = torch.arange(h, dtype=torch.float32, device=landmarks49.device)
    gx = torch.exp(-((grid[None, None, :] - pts[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, 49, h)
    gy = torch.exp(-((grid[None, None, :] - pts[..., 1:2]) ** 2) / (2 * sigma**2))
    g = gy[..., :, None] * gx[..., None, :]  # (B, 49, h, h)
    out = torch.zeros(landmarks49.shape[0], num_landmarks, h, h, dtype=torch.float32, device=landmarks49.device)
    out[:, torch.tensor(np.asarray(KEEP_68_TO_49), device=landmarks49.device)] = g
    return out


def decode_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """``(B, 49, 2)`` landmarks in input pixels from ``(B, 68, h, h)`` heatmaps: the arg-max of each
    of the 49 channels, moved a quarter pixel towards the larger neighbour, mapped back by
    ``x = 4 (u + 0.5) - 0.5``."""
    hm = heatmaps[:, torch.tensor(np.asarray(KEEP_68_TO_49), device=heatmaps.device)].float()
    B, P, H, W = hm.shape
    flat = hm.reshape(B, P, -1).argmax(-1)
    y, x = (flat // W), (flat % W)
    u, v = x.float(), y.float()

    def nb(dy, dx):
        yy = (y + dy).clamp(0, H - 1)
        xx = (x + dx).clamp(0, W - 1)
        return hm.reshape(B, P, -1).gather(-1, (yy * W + xx)[..., None])[..., 0]

    u = u + 0.25 * torch.sign(nb(0, 1) - nb(0, -1))
    v = v + 0.25 * torch.sign(nb(1, 0) - nb(-1, 0))
    return torch.stack([4 * (u + 0.5) - 0.5, 4 * (v + 0.5) - 0.5], dim=-1)


def nme(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-frame NME: mean over the 49 points of ``|pred - true|`` / inter-ocular distance (outer eye
    corners of ``true``)."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    i, j = OUTER_EYE_CORNERS_49
    iod = np.linalg.norm(true[:, i] - true[:, j], axis=-1)
    return np.linalg.norm(pred - true, axis=-1).mean(-1) / iod


def _dataset(root, prefix: str, size: int, train: bool):
    from audet.data import AUDataset
    from audet.data.transforms import EvalTransform, TrainTransform

    pre = fan_preprocess(size)
    # the FAN's own training augmentation: AUNet's crop and flip plus a colour jitter (brightness and
    # contrast 0.5) that AUNet itself does not use (face-alignment training's photometric augmentation)
    tf = (TrainTransform.from_preprocess(pre, brightness=0.5, contrast=0.5) if train
          else EvalTransform.from_preprocess(pre))
    return AUDataset(root, prefix, transform=tf)


def train_fan(root, prefix: str, *, size: int = 64, steps: int = 1500, batch_size: int = 16, lr: float = 1e-3,
              sigma: float = 1.0, pool: str = "max", seed: int = 0, num_workers: int = 1,
              log_every: int = 100) -> tuple[FAN, dict]:
    """Train a 2-stack FAN on ``root``/``prefix`` (a TRAINING prefix) for ``steps`` Adam steps
    (cosine to 0); returns the network in eval mode and ``{"loss": [mean loss per log interval]}``."""
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    fan = FAN(2, pool=pool)
    ds = _dataset(root, prefix, size, train=True)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
                        generator=g, persistent_workers=num_workers > 0)
    opt = torch.optim.Adam(fan.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    fan.train()
    step, record, acc = 0, {"loss": []}, []
    while step < steps:
        for batch in loader:
            target = heatmap_targets(batch["landmarks"], size, sigma)
            out = fan(batch["image"])
            loss = sum(F.mse_loss(h, target, reduction="sum") / h.shape[0] for h in out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            acc.append(float(loss.detach()))
            step += 1
            if step % log_every == 0 or step == steps:
                record["loss"].append(round(float(np.mean(acc)), 4))
                log.info("FAN step %d/%d: heatmap loss %.4f", step, steps, record["loss"][-1])
                acc = []
            if step >= steps:
                break
    return fan.eval(), record


@torch.no_grad()
def evaluate_nme(fan: FAN, root, prefix: str, *, size: int = 64, max_frames: int | None = 2000,
                 batch_size: int = 64) -> dict:
    """NME (%) of ``fan`` on ``root``/``prefix`` (evaluation transform, every k-th frame so that at
    most ``max_frames`` are scored), and that of the mean shape of those frames as a floor to beat:
    ``{"nme", "nme_mean_shape", "n"}``."""
    from torch.utils.data import DataLoader, Subset

    ds = _dataset(root, prefix, size, train=False)
    idx = list(range(len(ds)))
    if max_frames and len(idx) > max_frames:
        idx = idx[:: math.ceil(len(idx) / max_frames)]
    loader = DataLoader(Subset(ds, idx), batch_size=batch_size, shuffle=False)
    fan.eval()
    preds, trues = [], []
    for batch in loader:
        preds.append(decode_heatmaps(fan(batch["image"])[-1]).numpy())
        trues.append(batch["landmarks"].numpy())
    p, t = np.concatenate(preds), np.concatenate(trues)
    mean_shape = np.broadcast_to(t.mean(0, keepdims=True), t.shape)
    return {"nme": 100 * float(nme(p, t).mean()), "nme_mean_shape": 100 * float(nme(mean_shape, t).mean()),
            "n": int(len(t))}
