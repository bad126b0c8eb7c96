"""CIS: causal intervention on the confounder *Subject* (CISNet, ``papers/cisnet.md`` Eq. 1-5, Fig. 3).

A plug-in module between any backbone's pooled feature ``f_cur`` (``d_in``) and a classifier.
The back-door adjustment (Eq. 1) with the NWGM approximation (Eq. 2) and a linear model (Eq. 3)::

    P(Y | do(X)) = W_X f_cur + W_S r_cur                                   (Eq. 3)
    r_cur        = sum_i alpha_i s_i P(s_i)                                (Eq. 4)
    alpha_i      = softmax_i( (W_Q f_cur)^T (W_K s_i) / sqrt(d_m) )        (Eq. 5)

- the **confounder dictionary** ``S = [s_1 .. s_N]`` has one prototype per TRAINING subject,
  ``s_i = 1/N_i sum_k f_k^i``, the mean feature of that subject's training frames (the
  "feature memory bank" of section CIS Module). N = 27/27/28 for the BP4D folds of the paper.
- the **confounder priors** ``P(s_i) = N_i / sum_j N_j`` (that subject's share of the training
  frames), so the value fed to the attention is ``V = P * K`` (rows ``P(s_i) s_i``), exactly what
  the published code stores as ``V_subject`` (protocol section 9).
- the **confounder attention** ``alpha`` is scaled dot-product attention (Vaswani et al.) with
  ``W_Q, W_K in R^{d_m x d_in}``, ``d_m = 256`` (Fig. 3 / implementation details: d_in = d_out =
  512, d_m = 256). The weights live in :class:`~audet.models.layers.causal.CausalIntervention`
  (``w_q``, ``w_k``, ``w_x`` = W_X, ``w_z`` = W_S, all Linear with bias, as the authors'
  ``qmap``, ``kmap``, ``xmap``, ``smap``); the softmax runs over the N subjects.

Fig. 3's caption says ``W_X f`` and ``W_S r`` are "concatenated"; Eq. 3 and the published code
ADD them. We follow Eq. 3 (sum), which also gives the published 22,368,908 parameters.

Dictionary life cycle (the epoch-end data pass of the model contract, section 4):

1. the model is built with the subject vocabulary of the data (``subject_rows`` maps the global
   subject index of ``batch["subject"]`` to a dictionary row, -1 for non-training subjects);
2. the dictionary starts EMPTY (``valid`` False): the module is the identity, ``f_cur`` goes
   straight to the classifier (the authors' ``subject_infos=None`` path). The paper's first
   epoch only fills it ("In the first epoch, we stop the back-propagation step to initialize our
   confounder dictionary"): a ``collect_only`` stage;
3. :meth:`collect` accumulates per-subject feature sums and frame counts (float64) over a pass;
   :meth:`finalize` turns them into ``K``, ``P``, ``V`` (all-reduced under torch.distributed)
   and resets the accumulator. The dictionary is refreshed at every epoch end.

Subjects without a frame in the pass get no prototype: their keys are masked out of the softmax
(prior 0), so a partial pass (``limit_train_batches``) does not attend to empty rows.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

from audet.models.layers.causal import CausalIntervention

__all__ = ["SubjectCausalIntervention"]


class SubjectCausalIntervention(nn.Module):
    """The CIS module: subject dictionary buffers + confounder attention + ``W_X f + W_S r``.

    Args:
        dim: ``d_in`` (= ``d_out``), the feature size.
        key_dim: ``d_m`` of Eq. 5 (256 in the paper).
        subject_rows: for each GLOBAL subject index (``batch["subject"]``), its dictionary row or
            -1 (not a training subject); ``num_rows`` = number of training subjects.
        num_rows: dictionary size N (default ``max(subject_rows) + 1``).

    Buffers (carried by checkpoints and DDP): ``dict_keys`` ``(N, d)`` = K (prototypes s_i),
    ``dict_priors`` ``(N,)`` = P(s_i), ``dict_values`` ``(N, d)`` = V = P * K, ``dict_counts``
    ``(N,)`` float64 = N_i, ``dict_present`` ``(N,)`` bool, ``dict_valid`` ``()`` bool and
    ``subject_rows`` ``(G,)`` int64.
    """

    def __init__(self, dim: int = 512, key_dim: int = 256, subject_rows: Sequence[int] = (), num_rows: int | None = None):
        super().__init__()
        rows = torch.as_tensor(list(subject_rows), dtype=torch.int64).reshape(-1)
        n = int(num_rows) if num_rows is not None else (int(rows.max()) + 1 if rows.numel() else 0)
        if n < 1:
            raise ValueError("CIS needs at least one training subject for its confounder dictionary (Eq. 4)")
        if rows.numel() and (int(rows.max()) >= n or int(rows.min()) < -1):
            raise ValueError(f"subject_rows must be -1 or a row in 0..{n - 1}; got {rows.tolist()}")
        self.dim, self.key_dim, self.num_rows = int(dim), int(key_dim), n
        self.intervention = CausalIntervention(self.dim, self.key_dim)
        self.register_buffer("subject_rows", rows)
        self.register_buffer("dict_keys", torch.zeros(n, self.dim))
        self.register_buffer("dict_values", torch.zeros(n, self.dim))
        self.register_buffer("dict_priors", torch.zeros(n))
        self.register_buffer("dict_counts", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("dict_present", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("dict_valid", torch.zeros((), dtype=torch.bool))
        self.reset_accumulator()

    # ------------------------------------------------------------------------------------------
    @property
    def valid(self) -> bool:
        """True once a pass has filled the dictionary."""
        return bool(self.dict_valid)

    def attention(self, f: torch.Tensor) -> torch.Tensor:
        """alpha of Eq. 5, ``(B, N)``: softmax over the subjects with a prototype."""
        iv = self.intervention
        q = iv.w_q(f)  # (B, d_m)
        k = iv.w_k(self.dict_keys.to(f.dtype))  # (N, d_m)
        scores = (q @ k.transpose(0, 1)) / math.sqrt(self.key_dim)
        scores = scores.masked_fill(~self.dict_present, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def confounder(self, f: torch.Tensor) -> torch.Tensor:
        """r_cur of Eq. 4: ``sum_i alpha_i P(s_i) s_i = alpha @ V``, ``(B, d)``."""
        return self.attention(f) @ self.dict_values.to(f.dtype)

    def forward(self, f: torch.Tensor, enabled: bool | None = None) -> torch.Tensor:
        """Eq. 3: ``W_X f + W_S r`` with the dictionary; ``f`` unchanged when it is empty or
        ``enabled`` is False (the authors' ``subject_infos=None`` path). ``enabled=True``
        requires a filled dictionary."""
        if enabled is False or not self.valid:
            if enabled:
                raise ValueError("CIS: the subject dictionary is empty; run a data pass (collect_only epoch) first")
            if self.training and torch.is_grad_enabled():
                return f + self.intervention.zero_touch()  # keep W_* in the graph (DDP)
            return f
        iv = self.intervention
        return iv.w_x(f) + iv.w_z(self.confounder(f))

    # ------------------------------------------------------------------------------------------
    # filling the dictionary
    def reset_accumulator(self) -> None:
        self._acc_sum: torch.Tensor | None = None
        self._acc_n: torch.Tensor | None = None

    @property
    def accumulated(self) -> int:
        """Frames collected since the last :meth:`finalize`."""
        return 0 if self._acc_n is None else int(self._acc_n.sum())

    @torch.no_grad()
    def collect(self, f: torch.Tensor, subject: torch.Tensor) -> int:
        """Add features ``f`` ``(B, d)`` of frames of GLOBAL subjects ``subject`` ``(B,)`` to the
        per-subject memory banks (kept as float64 sums and counts). Frames of subjects that are not
        training subjects (row -1) are ignored. Returns the number of frames used."""
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"CIS.collect: features must be (B, {self.dim}); got {tuple(f.shape)}")
        subject = torch.as_tensor(subject, device=f.device).reshape(-1).long()
        if subject.numel() != f.shape[0]:
            raise ValueError(f"CIS.collect: {f.shape[0]} features but {subject.numel()} subject ids")
        G = self.subject_rows.numel()
        if subject.numel() and (int(subject.min()) < 0 or int(subject.max()) >= G):
            raise ValueError(
                f"CIS.collect: subject index out of range 0..{G - 1} (batch['subject'] must index the "
                "global subject vocabulary DataInfo.subjects the model was built with)"
            )
        rows = self.subject_rows.to(f.device)[subject]
        keep = rows >= 0
        if self._acc_sum is None or self._acc_sum.device != f.device:
            self._acc_sum = torch.zeros(self.num_rows, self.dim, dtype=torch.float64, device=f.device)
            self._acc_n = torch.zeros(self.num_rows, dtype=torch.float64, device=f.device)
        self._acc_sum.index_add_(0, rows[keep], f[keep].detach().to(torch.float64))
        self._acc_n.index_add_(0, rows[keep], torch.ones(int(keep.sum()), dtype=torch.float64, device=f.device))
        return int(keep.sum())

    @torch.no_grad()
    def finalize(self) -> bool:
        """K = per-subject means, P = N_i / sum N_j, V = P * K (Eq. 4); resets the accumulator.

        Collective under torch.distributed (sums and counts are all-reduced). Returns False (and
        keeps the old dictionary) when no frame was collected."""
        dev = self.dict_keys.device
        total = self._acc_sum if self._acc_sum is not None else torch.zeros(self.num_rows, self.dim, dtype=torch.float64, device=dev)
        n = self._acc_n if self._acc_n is not None else torch.zeros(self.num_rows, dtype=torch.float64, device=dev)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(n)
        self.reset_accumulator()
        if float(n.sum()) <= 0:
            return False
        keys = total / n.clamp_min(1.0).unsqueeze(1)
        self.set_dictionary(keys, n / n.sum(), counts=n)
        return True

    @torch.no_grad()
    def set_dictionary(
        self, keys: torch.Tensor, priors: torch.Tensor, values: torch.Tensor | None = None, counts: torch.Tensor | None = None
    ) -> None:
        """Install K ``(N, d)`` and P ``(N,)`` (V defaults to ``P[:, None] * K``, Eq. 4). Rows with
        ``counts`` 0 (or, without counts, prior 0) are absent (masked out of the attention)."""
        keys = torch.as_tensor(keys).to(self.dict_keys.device, torch.float64)
        priors = torch.as_tensor(priors).to(self.dict_keys.device, torch.float64).reshape(-1)
        if tuple(keys.shape) != (self.num_rows, self.dim) or priors.numel() != self.num_rows:
            raise ValueError(
                f"CIS dictionary must be K ({self.num_rows}, {self.dim}) and P ({self.num_rows},); got "
                f"K {tuple(keys.shape)}, P {tuple(priors.shape)}"
            )
        if values is None:
            values = priors.unsqueeze(1) * keys
        values = torch.as_tensor(values).to(self.dict_keys.device)
        if tuple(values.shape) != (self.num_rows, self.dim):
            raise ValueError(f"CIS dictionary V must be ({self.num_rows}, {self.dim}); got {tuple(values.shape)}")
        counts = priors if counts is None else torch.as_tensor(counts).to(self.dict_keys.device, torch.float64).reshape(-1)
        present = counts > 0
        if not bool(present.any()):
            raise ValueError("CIS dictionary has no subject with frames (all counts / priors are 0)")
        self.dict_keys.copy_(keys.to(self.dict_keys.dtype))
        self.dict_values.copy_(values.to(self.dict_values.dtype))
        self.dict_priors.copy_(priors.to(self.dict_priors.dtype))
        self.dict_counts.copy_(counts)
        self.dict_present.copy_(present)
        self.dict_valid.fill_(True)

    @torch.no_grad()
    def clear(self) -> None:
        """Empty the dictionary (e.g. when weights are moved to another dataset's subjects)."""
        for name in ("dict_keys", "dict_values", "dict_priors", "dict_counts"):
            getattr(self, name).zero_()
        self.dict_present.fill_(False)
        self.dict_valid.fill_(False)
        self.reset_accumulator()
