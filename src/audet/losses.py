"""Training losses of the seed methods, masked by the missing-label mask.

Every loss takes **logits** (not probabilities) of shape ``(B, A)`` or ``(B, T, A)`` (time is
flattened into the batch), labels of the same shape and an optional mask:

- ``labels`` are 0/1; any other value (the list files' ``9``, Aff-Wild2's ``-1``) counts as a
  missing label when ``mask`` is ``None``;
- ``mask`` is 1 where the label is known and 0 where it is missing (the batch dict's ``mask``).
  A masked entry contributes exactly nothing to the loss or its gradient, whatever its label.

Reduction, shared by the BCE-type losses
-----------------------------------------
With the per-element loss ``l_ij`` of sample ``i`` and AU ``j`` and AU weights ``w_j``:

``reduction="mean"`` (default), ``au_reduction="sum"`` (default)::

    L = sum_j w_j * (1/D_j) * sum_i m_ij * l_ij

where ``D_j = N`` (the number of samples, ``B*T``; ``normalize="batch"``, default) or the number
of known labels of AU ``j`` in the batch (``normalize="valid"``). With ``w_j`` summing to 1 this is
exactly AC2D Eq. 14 / AAR Eq. 4 / AU-Net Eq. 1 averaged over the batch.

``au_reduction="mean"`` divides by the number of AUs ``J`` as well. This is the form the published
code uses (an element-wise ``.mean()`` over ``B x J`` with the list files' weights ``w_j * J``):
``weighted_bce(..., au_weight=w * J, au_reduction="mean")`` equals
``weighted_bce(..., au_weight=w)``. See :func:`au_weights` (``scale="list"``).

``reduction="sum"`` uses ``D_j = 1``; ``reduction="none"`` returns the masked, weighted
per-element losses with the shape of ``logits``.
"""
from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "AUWeightWarning",
    "au_weights",
    "weighted_bce",
    "attention_kl",
    "cisnet_weights",
    "cisnet_adaptive_loss",
    "aunet_weights",
    "aunet_weighted_bce",
    "label_counts",
    "aar_attention_regression_loss",
    "escda_au_weights",
    "escda_weighted_loss",
    "aunet_vae_loss",
    "aunet_kl_normal",
    "aunet_consistency_loss",
    "aunet_consistency_loss_code",
]

Reduction = Literal["mean", "sum", "none"]


class AUWeightWarning(UserWarning):
    """An AU has no positive (or no negative) training label; its weights were guarded."""


# --------------------------------------------------------------------------------------------
# statistics from the training labels
# --------------------------------------------------------------------------------------------
def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _known_mask_np(labels: np.ndarray, mask) -> np.ndarray:
    known = (labels == 0) | (labels == 1)
    if mask is not None:
        known &= _to_numpy(mask).reshape(labels.shape) > 0
    return known


def label_counts(labels, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-AU ``(n_known, n_pos)`` over all leading dimensions of ``labels`` (``(..., A)``).

    A label is known where it is 0 or 1 (and ``mask`` is non-zero, if given).
    """
    lab = _to_numpy(labels)
    if lab.ndim < 1:
        raise ValueError("labels must have an AU dimension (..., A)")
    A = lab.shape[-1]
    lab = lab.reshape(-1, A)
    known = _known_mask_np(lab, None if mask is None else _to_numpy(mask).reshape(-1, A))
    n_known = known.sum(axis=0).astype(np.int64)
    n_pos = ((lab == 1) & known).sum(axis=0).astype(np.int64)
    return n_known, n_pos


def _like_input(arr: np.ndarray, like):
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(arr, dtype=torch.float32, device=like.device)
    return arr.astype(np.float64)


def au_weights(labels, mask=None, *, scale: Literal["paper", "list"] = "paper"):
    """AU weights ``(w, v)`` of AC2D Eq. 14 (= AAR Eq. 5 = ESCDA Eq. 8) from training labels.

    ``w_j = (N/N_occ_j) / sum_s (N/N_occ_s)`` (sums to 1) and ``v_j = (N - N_occ_j)/N_occ_j``.
    With missing labels, ``N`` is taken per AU (``N_j`` = number of known labels of AU ``j``), so
    ``N_j/N_occ_j`` is the inverse occurrence rate over the frames where AU ``j`` is annotated.

    ``scale="list"`` returns ``w_j * J`` (J = number of AUs), the values of the published
    ``<prefix>_weight.txt`` files (protocol section 4), which sum to J. The published code pairs
    them with a mean over AUs; :func:`weighted_bce` sums over AUs, so pass the default
    ``scale="paper"`` weights to it (or the list weights with ``au_reduction="mean"``).

    Guards (each emits an :class:`AUWeightWarning` naming the AU columns):

    - an AU with **no positive** known label would get infinite weights. It gets the smallest
      inverse rate of the other AUs in the normalisation (so it still learns "absent" at the weight
      of the most frequent AU) and ``v_j = 1``. If no AU has a positive, ``w`` is uniform.
      Eq. 14 is undefined there and the published code divides by zero, so this is our guard; the
      alternative of counting one positive (``N_j/1``) would hand that AU, which has nothing
      positive to learn, almost all of the weight on a large training set. The list files'
      ``_weight.txt`` / ``_p_n_weight.txt`` are written with this function (one implementation).
    - an AU that is **always positive** gets ``v_j = 0`` by the formula (its loss vanishes); it is
      kept, with a warning.

    Returns numpy float64 arrays for numpy input, float32 tensors (same device) for tensors.
    """
    n_known, n_pos = label_counts(labels, mask)
    A = n_known.shape[0]
    has_pos = n_pos > 0
    inv_rate = np.zeros(A, dtype=np.float64)
    inv_rate[has_pos] = n_known[has_pos] / n_pos[has_pos]
    if not has_pos.all():
        bad = np.flatnonzero(~has_pos).tolist()
        warnings.warn(
            f"au_weights: AU column(s) {bad} have no positive training label; using the smallest "
            "inverse occurrence rate of the other AUs for w and v = 1 (finite weights).",
            AUWeightWarning,
            stacklevel=2,
        )
        inv_rate[~has_pos] = inv_rate[has_pos].min() if has_pos.any() else 1.0
    w = inv_rate / inv_rate.sum()
    v = np.ones(A, dtype=np.float64)
    v[has_pos] = (n_known[has_pos] - n_pos[has_pos]) / n_pos[has_pos]
    all_pos = has_pos & (n_pos == n_known)
    if all_pos.any():
        warnings.warn(
            f"au_weights: AU column(s) {np.flatnonzero(all_pos).tolist()} are positive in every "
            "known training frame; v = 0 there, so that AU's loss is zero.",
            AUWeightWarning,
            stacklevel=2,
        )
    if scale == "list":
        w = w * A
    elif scale != "paper":
        raise ValueError(f"scale must be 'paper' or 'list', got {scale!r}")
    return _like_input(w, labels), _like_input(v, labels)


def aunet_weights(labels, mask=None):
    """AU-Net Eq. 1 weights ``w_i = (1/r_i) / sum_k (1/r_k)`` (r = occurrence rate).

    Identical to the ``w`` of :func:`au_weights` (same guards). The published AU-Net code scales
    them by J and uses ``BCEWithLogitsLoss(weight=...)`` (mean over B x J), which equals
    :func:`aunet_weighted_bce` with these weights.
    """
    return au_weights(labels, mask)[0]


def cisnet_weights(labels, mask=None):
    """CISNet Eq. 6 weights ``mu_i``: the occurrence frequency of AU ``i`` in the training set.

    ``mu_i = N_occ_i / N_i`` over the known labels. The paper says mu is "maintained adaptively";
    we compute it once from the training labels (the published code reads fixed values from its
    config). An AU without positives gets ``mu = 0`` (its positive term has weight 1 and there are
    no positives), with an :class:`AUWeightWarning`.
    """
    n_known, n_pos = label_counts(labels, mask)
    mu = np.where(n_known > 0, n_pos / np.maximum(n_known, 1), 0.0)
    if (n_pos == 0).any():
        warnings.warn(
            f"cisnet_weights: AU column(s) {np.flatnonzero(n_pos == 0).tolist()} have no positive "
            "training label (mu = 0).",
            AUWeightWarning,
            stacklevel=2,
        )
    return _like_input(mu, labels)


# --------------------------------------------------------------------------------------------
# shared plumbing
# --------------------------------------------------------------------------------------------
def _prepare(logits: torch.Tensor, labels: torch.Tensor, mask):
    """Flatten to (N, A); return float32 logits, 0/1 targets and a float mask."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError("logits must be a torch.Tensor")
    labels = torch.as_tensor(labels, device=logits.device)
    if labels.shape != logits.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} != logits shape {tuple(logits.shape)}")
    if logits.dim() not in (2, 3):
        raise ValueError(f"logits must be (B, A) or (B, T, A), got {tuple(logits.shape)}")
    A = logits.shape[-1]
    x = logits.reshape(-1, A).float()
    y = labels.reshape(-1, A).float()
    known = (y == 0) | (y == 1)
    if mask is not None:
        mask = torch.as_tensor(mask, device=logits.device)
        if mask.shape != logits.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != logits shape {tuple(logits.shape)}")
        known = known & (mask.reshape(-1, A) > 0)
    m = known.float()
    y = torch.where(known, y, torch.zeros_like(y))
    return x, y, m


def _vec(w, A: int, device, name: str):
    if w is None:
        return None
    w = torch.as_tensor(w, dtype=torch.float32, device=device).reshape(-1)
    if w.numel() != A:
        raise ValueError(f"{name} has {w.numel()} values for {A} AUs")
    return w


def _reduce(elem, m, au_weight, shape, reduction, au_reduction, normalize):
    """Apply mask and AU weights to (N, A) element losses and reduce (see module docstring)."""
    N, A = elem.shape
    w = au_weight if au_weight is not None else torch.full((A,), 1.0 / A, device=elem.device)
    elem = elem * m * w
    if reduction == "none":
        return elem.reshape(shape)
    if reduction == "sum":
        per_au = elem.sum(dim=0)
    elif reduction == "mean":
        if normalize == "batch":
            denom = torch.full((A,), float(max(N, 1)), device=elem.device)
        elif normalize == "valid":
            denom = m.sum(dim=0).clamp_min(1.0)
        else:
            raise ValueError(f"normalize must be 'batch' or 'valid', got {normalize!r}")
        per_au = elem.sum(dim=0) / denom
    else:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if au_reduction == "sum":
        return per_au.sum()
    if au_reduction == "mean":
        return per_au.mean()
    raise ValueError(f"au_reduction must be 'sum' or 'mean', got {au_reduction!r}")


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------
def weighted_bce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    au_weight=None,
    pos_weight=None,
    reduction: Reduction = "mean",
    *,
    au_reduction: Literal["sum", "mean"] = "sum",
    normalize: Literal["batch", "valid"] = "batch",
) -> torch.Tensor:
    """Weighted BCE of AC2D Eq. 14 (also AAR Eq. 4/14 and ESCDA Eq. 7), masked.

    ``L = -sum_j w_j [v_j p_j log sigma(x_j) + (1 - p_j) log(1 - sigma(x_j))]`` per sample, then
    averaged over the samples (frames; ``(B, T, A)`` is flattened, which is AAR's ``1/t sum_i``).

    - ``au_weight`` = ``w`` (sums to 1, from :func:`au_weights`); ``None`` means uniform ``1/A``
      (AAR's unweighted baseline "w_j = 1/m"), i.e. the mean over AUs.
    - ``pos_weight`` = ``v``; ``None`` means 1.
    - computed from logits with ``binary_cross_entropy_with_logits`` (stable), in float32.

    See the module docstring for ``reduction``, ``au_reduction`` (``"mean"`` = the published
    code's normalisation for list-file weights ``w * J``) and ``normalize``.
    """
    x, y, m = _prepare(logits, labels, mask)
    A = x.shape[1]
    w = _vec(au_weight, A, x.device, "au_weight")
    v = _vec(pos_weight, A, x.device, "pos_weight")
    elem = F.binary_cross_entropy_with_logits(x, y, pos_weight=v, reduction="none")
    return _reduce(elem, m, w, logits.shape, reduction, au_reduction, normalize)


def aunet_weighted_bce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    au_weight=None,
    reduction: Reduction = "mean",
    *,
    au_reduction: Literal["sum", "mean"] = "sum",
    normalize: Literal["batch", "valid"] = "batch",
) -> torch.Tensor:
    """AU-Net Eq. 1: ``-sum_i w_i [y_i ln y^_i + (1 - y_i) ln(1 - y^_i)]``, averaged over samples.

    ``au_weight`` from :func:`aunet_weights` (sums to 1; ``None`` = uniform). Same as
    :func:`weighted_bce` without the positive weight ``v``.
    """
    return weighted_bce(
        logits, labels, mask, au_weight, None, reduction, au_reduction=au_reduction, normalize=normalize
    )


def cisnet_adaptive_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    mu=None,
    reduction: Reduction = "mean",
    *,
    au_reduction: Literal["sum", "mean"] = "sum",
    normalize: Literal["batch", "valid"] = "batch",
    smoothing: float = 0.0,
) -> torch.Tensor:
    """CISNet Eq. 6 adaptive loss, masked.

    ``L = -sum_i [(1 - mu_i) p_i log p^_i + mu_i (1 - p_i) log(1 - p^_i)]`` per sample, averaged
    over samples, with ``mu_i`` the training occurrence frequency (:func:`cisnet_weights`). Rare
    AUs (small mu) thus weight their positives by ``1 - mu`` and their negatives by ``mu``. Note
    that, unlike AC2D, there is no normalised per-AU weight: the AUs are summed unweighted.

    Differences from the published CIS code (offered, not default):

    - the code averages over AUs as well (``loss / (num_class * N)``): ``au_reduction="mean"``;
    - the code computes ``log((p + 0.05)/1.05)`` and ``log((1.05 - p)/1.05)`` on probabilities:
      ``smoothing=0.05`` (default 0 = exact Eq. 6, computed stably from logits);
    - the code passes the weights under the wrong keyword, so its loss is unweighted: ``mu=None``
      gives that unweighted loss (weight 1 on both terms, not 1 - 0.5/0.5).
    """
    x, y, m = _prepare(logits, labels, mask)
    A = x.shape[1]
    mu_t = _vec(mu, A, x.device, "mu")
    if smoothing and smoothing > 0:
        p = torch.sigmoid(x)
        s = float(smoothing)
        nlog_pos = -torch.log((p + s) / (1.0 + s))
        nlog_neg = -torch.log((1.0 + s - p) / (1.0 + s))
    else:
        nlog_pos = F.softplus(-x)  # -log sigmoid(x)
        nlog_neg = F.softplus(x)  # -log(1 - sigmoid(x))
    if mu_t is None:
        elem = y * nlog_pos + (1.0 - y) * nlog_neg
    else:
        elem = (1.0 - mu_t) * y * nlog_pos + mu_t * (1.0 - y) * nlog_neg
    ones = torch.ones(A, device=x.device)  # Eq. 6 sums the AUs without a per-AU weight
    return _reduce(elem, m, ones, logits.shape, reduction, au_reduction, normalize)


def attention_kl(
    attn_avg: torch.Tensor,
    attn_gt: torch.Tensor,
    reduction: Literal["mean", "batchmean", "sum", "none"] = "mean",
    *,
    log_input: bool = False,
    eps: float = 1e-12,
) -> torch.Tensor:
    """AC2D Eq. 7: KL(A_gt || A_avg) between the predefined and the average attention.

    ``attn_avg``: the average self-attention distribution per AU, e.g. ``(B, A, l/8, l/8)`` or
    ``(B, A, (l/8)^2)`` (already averaged over heads and queries, Eq. 6); pass log-probabilities
    with ``log_input=True``. ``attn_gt``: the L1-normalised predefined maps (Eq. 3-5), same number
    of elements (reshaped to ``attn_avg``'s shape if only the layout differs).

    Element-wise ``gt * (log gt - log avg)``, with ``0 log 0 = 0`` and ``log avg`` guarded by
    ``clamp_min(eps)`` (a zero attention weight would otherwise give ``inf``).

    ``reduction="mean"`` (default) averages over all elements, i.e. Eq. 7's
    ``1/(m l/8 l/8) sum_j sum_st`` averaged over the batch; this is what the published code
    computes and what ``lambda_a = 12800`` is tuned to (protocol section 7). ``"batchmean"``
    divides the sum by the batch size (the textbook KL per sample), ``"sum"``/``"none"`` as usual.
    """
    if attn_gt.shape != attn_avg.shape:
        if attn_gt.numel() != attn_avg.numel():
            raise ValueError(f"attention shapes differ: {tuple(attn_avg.shape)} vs {tuple(attn_gt.shape)}")
        attn_gt = attn_gt.reshape(attn_avg.shape)
    gt = attn_gt.float()
    if log_input:
        log_avg = attn_avg.float()
    else:
        log_avg = torch.log(attn_avg.float().clamp_min(eps))
    elem = torch.xlogy(gt, gt) - gt * log_avg
    if reduction == "none":
        return elem
    if reduction == "sum":
        return elem.sum()
    if reduction == "mean":
        return elem.mean()
    if reduction == "batchmean":
        return elem.sum() / max(elem.shape[0], 1)
    raise ValueError(f"reduction must be 'mean', 'batchmean', 'sum' or 'none', got {reduction!r}")


# --- AAR (aar.md) ---
def aar_attention_regression_loss(pred_maps: torch.Tensor, target_maps: torch.Tensor) -> torch.Tensor:
    """AAR Eq. 3: ``L_a = 1/(t m (l/4)^2) sum_i sum_j sum_ab (M^_ijab - M_ijab)^2``.

    ``pred_maps`` are the regressed attention maps M^ and ``target_maps`` the predefined maps M of
    Eq. 1-2 (:func:`audet.geometry.aar_attention_maps`, not normalised), both ``(..., m, h, w)``
    (e.g. ``(B, t, m, l/4, l/4)``). The mean squared error over every element, i.e. Eq. 3
    averaged over the batch as well. Computed in float32.
    """
    if pred_maps.shape != target_maps.shape:
        raise ValueError(f"attention maps {tuple(pred_maps.shape)} and predefined maps "
                         f"{tuple(target_maps.shape)} differ in shape")
    return F.mse_loss(pred_maps.float(), target_maps.to(pred_maps.device).float(), reduction="mean")


# --- ESCDA (escda.md) ---
def escda_au_weights(labels, mask=None):
    """ESCDA Eq. 8: ``w^(i) = (n / n_occ^(i)) / sum_k (n / n_occ^(k))`` and
    ``v^(i) = (n - n_occ^(i)) / n_occ^(i)`` from the training labels.

    The same weights as AC2D Eq. 14 (:func:`au_weights`, with its guards for AUs without positives
    and ``n`` taken per AU over the labelled frames); named here for the ESCDA equation.
    """
    return au_weights(labels, mask)


def escda_weighted_loss(logits, labels, mask=None, au_weight=None, pos_weight=None, reduction: Reduction = "mean"):
    """ESCDA Eq. 7: ``L_u = -sum_i w^(i) [v^(i) p^(i) log p^_(i) + (1 - p^(i)) log(1 - p^_(i))]``,
    averaged over the frames, masked by missing labels (:func:`weighted_bce` with the Eq. 8 weights).
    Used by LSC and GDA alike (section 3.2: "the same AU detection loss")."""
    return weighted_bce(logits, labels, mask, au_weight, pos_weight, reduction)


# --- AUNet (aunet.md) ---


def aunet_kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(N(mu, diag(exp(logvar))) || N(0, I)) = 1/2 sum_k (mu^2 + s^2 - 1 - log s^2)``
    (the L_kl of AU-Net Eq. 2), shape ``(B,)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def aunet_vae_loss(
    recon_logits: torch.Tensor,
    labels: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    lam: float = 0.1,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """AU-Net Eq. 2: ``L_vae = L_bce(y, D(E(y~))) + lambda L_kl``, averaged over the batch
    (``reduction="mean"``, default) or summed over it (``"sum"``, as the published train_vae.py).

    ``recon_logits`` = D(E(y~)) as logits ``(B, A)`` (the decoder applies no sigmoid), ``labels`` =
    the CLEAN labels y (the encoder saw the corrupted y~), ``mu``/``logvar`` the encoder outputs for
    y~. ``L_bce = -sum_i [y_i ln y^_i + (1 - y_i) ln(1 - y^_i)]`` is summed over the AUs (``mask``
    drops unknown labels); ``L_kl`` is :func:`aunet_kl_normal`. Returns ``{"bce", "kl"}`` with
    ``kl`` already multiplied by ``lam`` (the paper picks lambda from {0.1, 0.2, 0.3}).
    """
    x, y, m = _prepare(recon_logits, labels, mask)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r}; choose mean or sum")
    bce = (F.binary_cross_entropy_with_logits(x, y, reduction="none") * m).sum(dim=1)
    kl = aunet_kl_normal(mu.float(), logvar.float())
    if reduction == "mean":
        bce, kl = bce.mean(), kl.mean()
    else:
        bce, kl = bce.sum(), kl.sum()
    return {"bce": bce, "kl": float(lam) * kl}


def aunet_consistency_loss(
    mu_p: torch.Tensor,
    logvar_p: torch.Tensor,
    mu_g: torch.Tensor,
    logvar_g: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """AU-Net Eq. 3: ``L_cons = ||mu_p - mu_g||^2 + ||Sigma_p - Sigma_g||^2`` per sample, averaged
    over the batch.

    ``(mu_p, logvar_p)`` = E(sigmoid(prediction)), ``(mu_g, logvar_g)`` = E(ground truth) of the
    frozen VAE encoder; ``Sigma = exp(logvar)`` is the diagonal covariance of N(mu, Sigma).
    ``weight`` ``(B,)`` (optional): per-sample weights (e.g. 0 for frames with unknown labels); the
    mean is then over the weighted samples.
    """
    per = (mu_p - mu_g).pow(2).sum(-1) + (logvar_p.exp() - logvar_g.exp()).pow(2).sum(-1)
    if weight is None:
        return per.mean()
    w = weight.to(per.dtype)
    return (per * w).sum() / w.sum().clamp_min(1.0)


def aunet_consistency_loss_code(
    mu_p: torch.Tensor, std_p: torch.Tensor, mu_g: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """The published AU-Net code's consistency term (train_video_vae.py), not Eq. 3:
    ``mse(mu_p, mu_g) + mean(std_p)`` with element-wise means over batch and latent dims and
    ``std_p = exp(logvar_p / 2)`` of the prediction (the teacher's std is not used)."""
    sq = (mu_p - mu_g).pow(2).mean(-1)
    sd = std_p.mean(-1)
    if weight is None:
        return sq.mean() + sd.mean()
    w = weight.to(sq.dtype)
    return ((sq + sd) * w).sum() / w.sum().clamp_min(1.0)
