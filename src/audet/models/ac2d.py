"""AC2D: adaptively constraining self-attention and causally deconfounding sample (Shao et al.).

Architecture (Fig. 2, section 3; the authors' layer math from
``shared/reference/original-checkpoints/README.md``)::

    image 3 x l x l (l = 176)
      -> ConvStem (c x l/2 x l/2) -> stage 1: n1 = 1 block  (1 head, sr 4)
      -> PatchEmbed (c x l/4 x l/4) -> stage 2: n2 = 6 blocks (2 heads, sr 2)   = rich feature
      -> per AU j (m branches):
           PatchEmbed (c x l/8 x l/8) -> stage 3: n3 = 3 blocks (4 heads, sr 1)
             the (n3-1)-th block (index n3-2) is the constrained one: its attention A^(j)
             averaged over heads and queries (Eq. 6) is pulled towards A^gt(j) by L_a (Eq. 7)
           -> LayerNorm -> average pool -> f^(j) (c)
           -> causal intervention W_X f + W_Z E_z[g(z)] (Eq. 10-13)     [C variants only]
           -> Linear(c, 1) -> logit (sigmoid gives p^(j))

c = 64, k (stage-3 heads) = 4, W_Q, W_K: c -> 8c, W_X, W_Z: c -> c, every Block is
EMSAv2 (Eq. 1-2, with the upsample branch) + MLP (4c), LayerNorm eps 1e-6, drop path 0.1.
With 12 AUs at 176 x 176 the model has exactly 3,625,196 parameters (trunk 444,896, each AU
branch 265,025), with 8 AUs 2,565,096. Loss (Eq. 15): ``L = L_u (Eq. 14) + lambda_a L_a (Eq. 7)``.

Variants (Table 8), each a registered name:

==============  =========================  ====================  ===============================
name            paper                      ``attention_loss``    ``intervention`` / prototype
==============  =========================  ====================  ===============================
ac2d_bnet       B-Net                      ``none``              ``none``
ac2d_av         A^v-Net                    ``average`` (Eq. 6)   ``none``
ac2d_ae         A^e-Net                    ``each``              ``none``
ac2d            AC2D = A^v C^e(d)          ``average``           ``per_au`` / ``batch``
ac2d_avces      A^v C^e(s)-Net             ``average``           ``per_au`` / ``epoch``
ac2d_avcsd      A^v C^s(d)-Net             ``average``           ``shared`` / ``batch``
==============  =========================  ====================  ===============================

Sample prototypes (``prototype=``), i.e. ``bar f`` of Eq. 12a, which is the single key and value:

- ``"batch"`` (paper, C^e(d), default): the mean of the current mini-batch's pooled features
  (detached), recomputed every training step. In eval the stored epoch running mean is used
  (the buffers are refreshed at each epoch end from the features seen during the epoch); before
  the first epoch end, eval runs without intervention.
- ``"epoch_stale"`` (published code): the mean of the pooled features of all augmented
  training batches of the previous epoch; epoch 0 trains without intervention.
- ``"epoch"`` (paper, C^e(s)): static, recomputed at each epoch end with the current parameters.
  That needs a data pass (the model contract's epoch-end pass): ``wants_data_pass(epoch)`` is
  True, the engine calls ``data_pass_step(batch)`` on every training batch in order (eval mode,
  no grad; each returns the batch's feature sum and count) and ``data_pass_end(results)`` sets the
  prototypes. Without that pass, ``on_train_epoch_end`` falls back to the features gathered during
  the epoch (= ``epoch_stale``) and warns once.

Confounder scale (``confounder_scale=``): ``"paper"`` (default) uses ``V = bar f`` (Eq. 13);
``"code"`` uses ``V = P * bar f`` with ``P = 1/N``, N = the number of samples the prototype was
averaged over (the published code; with N ~ 1e5 the confounder term almost vanishes). Use
``"code"`` for checkpoint parity (the converter sets it).

Intervention initialisation (``intervention_init=``): ``"restv2"`` (default; the authors' code
initialises every Linear layer, W_X and W_Z included, with a truncated normal of std 0.02) or
``"identity"`` (W_X = I, W_Z = 0, biases 0: the layer starts as ``f`` itself and the model as
B-Net's ``head(f)``; not in the paper). Why the option exists (issue 17, measured with
``benchmarks/loss_terms.py`` on 64 fixed frames of the synthetic test preset, narrow model at
64 px, AdamW lr 3e-3, lambda_a = 128): with ``"restv2"`` the classifier path
``head(W_X f + W_Z bar f)`` is a product of two std-0.02 matrices, the logits' spread across
images is 0.0006 at initialisation and still 0.016 after 40 steps (the AU loss barely moves); with
``"identity"`` it is 0.012 at initialisation and 0.76 after 40 steps, as for B-Net (0.42).

Prototype state lives in registered buffers ``proto_k`` (K = bar f), ``proto_v`` (V),
``proto_count`` (N, float64) and ``proto_valid`` (bool), so checkpoints and DDP carry them; the
bookkeeping (which mean a step uses, V from K, the epoch accumulator all-reduced across processes)
is :mod:`audet.models.layers.prototypes`. A training step that skips the intervention (no
prototypes yet: epoch 0 of ``epoch_stale``/``epoch``) keeps its layers in the graph with a zero
term (DDP) and lists them in :meth:`AC2D.parameters_without_gradient`, so the engine drops their
gradients and AdamW neither decays nor moves them, as the authors' optimiser skips parameters whose
gradient is None.

Stage-3 evaluation (``branch_impl=``): ``"auto"`` (default) is ``"batched"`` for a batch of one
image or off the CPU and ``"loop"`` otherwise (measured: stacking wins only at batch 1 on the
2-core CPU). ``"batched"`` runs the m branches as ONE stacked
computation (their weights stacked at call time, batched matmuls and grouped convolutions,
:mod:`audet.models.layers.stacked`); ``"loop"`` runs them one after another, as the authors' code
does. Same parameters and state_dict names, same maths: outputs, losses and gradients agree to
float rounding (tests: atol 1e-5, and the golden parity with the authors' outputs holds on both
paths). ``forward_logits`` (evaluation, inference, ONNX) forms no attention summaries, so
the constrained block also runs the fused ``scaled_dot_product_attention``.

Training recipe, paper vs published code (protocol section 7; the ``recipe=code`` table of
docs/models/ac2d.md), also in ``model_info(name)["recipe"]``:

=============  ==========================  ===============================================
               paper (section 4.1.2)       published code (``recipe=code``)
=============  ==========================  ===============================================
optimizer      AdamW, wd 0.05              AdamW, wd 0.05 (params with grad None skipped)
lr             2e-3 * batch / 256          4e-3 * 24 / 256 (batch 24)
schedule       cosine, 1 warm-up epoch     cosine to 1e-6, warm-up lr * s / (W - 1)
epochs         20                          20
grad clip      max norm 3.0                max norm 1.0
prototypes     batch mean (C^e(d))         previous epoch's mean, none in epoch 0; V = K/N
selection      (not stated)                every training subject trains; test fold every epoch
other                                      AMP, seed 4
=============  ==========================  ===============================================
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Sequence

import torch
from torch import nn

from audet.models.base import AUModel, DataInfo, LossContext, ModelOutput
from audet.models.layers import Block, CausalIntervention, ConvStem, PatchEmbed, init_restv2_weights, tokens_to_map
from audet.models.layers.embed import LN_EPS
from audet.models.layers.prototypes import (
    CONFOUNDER_SCALES,
    PROTOTYPE_MODES,
    FeatureMean,
    confounder_value,
    training_prototype,
)
from audet.models.layers.stacked import (
    stacked_block,
    stacked_intervention,
    stacked_layer_norm,
    stacked_linear,
    stacked_patch_embed,
)
from audet.models.registry import register_model, variant_factory

__all__ = [
    "AC2D",
    "AUBranch",
    "PROTOTYPE_MODES",
    "CONFOUNDER_SCALES",
    "BRANCH_IMPLS",
    "ATTENTION_LOSSES",
    "INTERVENTIONS",
    "RECIPES",
]

INTERVENTION_INITS = ("restv2", "identity")
#: how stage 3 evaluates the m AU branches (same maths, same parameters): see ``AC2D.forward``
BRANCH_IMPLS = ("auto", "batched", "loop")
ATTENTION_LOSSES = ("average", "each", "none")
INTERVENTIONS = ("per_au", "shared", "none")

#: Training recipes (the engine's configs implement them); lr is per 256 images, scaled linearly.
RECIPES = {
    "paper": {
        "optimizer": "AdamW", "base_lr": 2e-3, "lr_rule": "base_lr * batch_size / 256", "weight_decay": 0.05,
        "epochs": 20, "warmup_epochs": 1, "schedule": "cosine", "grad_clip_norm": 3.0,
        "source": "AC2D paper, section 4.1.2",
    },
    "code": {
        "optimizer": "AdamW", "base_lr": 4e-3, "lr_rule": "base_lr * batch_size / 256", "weight_decay": 0.05,
        "batch_size": 24, "epochs": 20, "warmup_epochs": 1, "warmup": "lr * s / (W - 1)", "schedule": "cosine",
        "min_lr": 1e-6, "grad_clip_norm": 1.0, "amp": True, "seed": 4, "prototype": "epoch_stale",
        "confounder_scale": "code", "validation": "none (every training subject)",
        "selection": "per-epoch evaluation on the test fold", "source": "published code (protocol section 7)",
    },
}


def _check(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {', '.join(map(repr, choices))}")


class AUBranch(nn.Module):
    """One AU branch: PatchEmbed -> stage-3 blocks -> LayerNorm -> pool -> [intervention] -> head."""

    def __init__(
        self, dim: int, num_heads: int, sr_ratio: int, depth: int, mlp_ratio: float,
        drop_paths: Sequence[float], intervention: bool, key_dim: int,
    ):
        super().__init__()
        self.embed = PatchEmbed(dim, dim)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, sr_ratio, mlp_ratio, drop_path=drop_paths[i]) for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.intervention = CausalIntervention(dim, key_dim) if intervention else None
        self.head = nn.Linear(dim, 1)

    def forward_features(self, rich_map: torch.Tensor, constrained: int, outputs: Sequence[str]):
        """Pooled feature f^(j) ``(B, C)``, the constrained block's attention summaries, and (H, W)."""
        t, H, W = self.embed(rich_map)
        info: dict[str, torch.Tensor] = {}
        for k, blk in enumerate(self.blocks):
            if k == constrained and outputs:
                t, info = blk.forward_attn(t, H, W, outputs)
            else:
                t = blk(t, H, W)
        return self.norm(t).mean(dim=1), info, (H, W)


class AC2D(AUModel):
    """AC2D and its Table 8 variants; see the module docstring for every option."""

    au_module_lists = ("branches",)
    #: sample prototypes are statistics of the training data, so AU-identity transfer does NOT carry
    #: them over: they restart invalid (the authors' DISFA script also starts without ``K_data``)
    au_fresh_keys = ("proto_*",)

    def __init__(
        self,
        aus: Sequence[int],
        *,
        embed_dim: int = 64,
        num_heads: Sequence[int] = (1, 2, 4),
        depths: Sequence[int] = (1, 6, 3),
        sr_ratios: Sequence[int] = (4, 2, 1),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        causal_dim: int = 512,
        img_size: int = 176,
        in_chans: int = 3,
        attention_loss: str = "average",
        intervention: str = "per_au",
        prototype: str = "batch",
        confounder_scale: str = "paper",
        intervention_init: str = "restv2",
        lambda_a: float = 12800.0,
        sigma: float = 3.0,
        branch_impl: str = "auto",
        preprocess: dict | None = None,
        data: DataInfo | None = None,
    ):
        pre = {"crop_size": int(img_size), **(preprocess or {})}
        super().__init__(aus, pre, data)
        _check("attention_loss", attention_loss, ATTENTION_LOSSES)
        _check("intervention", intervention, INTERVENTIONS)
        _check("prototype", prototype, PROTOTYPE_MODES)
        _check("confounder_scale", confounder_scale, CONFOUNDER_SCALES)
        _check("intervention_init", intervention_init, INTERVENTION_INITS)
        _check("branch_impl", branch_impl, BRANCH_IMPLS)
        depths, num_heads, sr_ratios = tuple(map(int, depths)), tuple(map(int, num_heads)), tuple(map(int, sr_ratios))
        if not (len(depths) == len(num_heads) == len(sr_ratios) == 3) or min(depths) < 1:
            raise ValueError(f"need 3 stages with >= 1 block each; got depths={depths}, heads={num_heads}, sr={sr_ratios}")
        if img_size % 8:
            raise ValueError(f"img_size must be a multiple of 8 (three stride-2 stages); got {img_size}")
        self.embed_dim = C = embed_dim
        self.img_size = img_size
        self.attention_loss = attention_loss
        self.intervention = intervention
        self.prototype = prototype
        self.confounder_scale = confounder_scale
        self.lambda_a = float(lambda_a)
        self.sigma = float(sigma)
        #: "batched": the m branches run as one stacked computation; "loop": one after another;
        #: "auto" (default): batched for a batch of 1 or off the CPU, else loop (see _batched)
        self.branch_impl = branch_impl
        #: index of the constrained block in stage 3: the (n3 - 1)-th block (1-based)
        self.constrained_index = max(depths[2] - 2, 0)

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        d1, d2, d3 = depths
        self.stem = ConvStem(in_chans, C)
        self.stage1 = nn.ModuleList(Block(C, num_heads[0], sr_ratios[0], mlp_ratio, dpr[i]) for i in range(d1))
        self.embed2 = PatchEmbed(C, C)
        self.stage2 = nn.ModuleList(Block(C, num_heads[1], sr_ratios[1], mlp_ratio, dpr[d1 + i]) for i in range(d2))
        self.rich_intervention = CausalIntervention(C, causal_dim) if intervention == "shared" else None
        self.branches = nn.ModuleList(
            AUBranch(C, num_heads[2], sr_ratios[2], d3, mlp_ratio, dpr[d1 + d2:], intervention == "per_au", causal_dim)
            for _ in range(self.num_aus)
        )
        self.apply(init_restv2_weights)
        if intervention_init == "identity":
            for mod in self.modules():
                if isinstance(mod, CausalIntervention):
                    mod.identity_init()

        if intervention != "none":
            shape = (self.num_aus, C) if intervention == "per_au" else ((img_size // 4) ** 2, C)
            self.register_buffer("proto_k", torch.zeros(shape))
            self.register_buffer("proto_v", torch.zeros(shape))
            self.register_buffer("proto_count", torch.zeros((), dtype=torch.float64))
            self.register_buffer("proto_valid", torch.zeros((), dtype=torch.bool))
        self._proto_acc = FeatureMean()
        #: names of the intervention parameters the last training forward skipped (zero-touched)
        self._skipped: tuple[str, ...] = ()
        self._fresh_pass = False
        self._warned_no_pass = False

    # ------------------------------------------------------------------------------------------
    # forward
    @property
    def has_intervention(self) -> bool:
        return self.intervention != "none"

    @property
    def _static_prototypes(self) -> bool:
        """``prototype="epoch"`` (C^e(s)): prototypes come from an epoch-end data pass."""
        return self.has_intervention and self.prototype == "epoch"

    def wants_data_pass(self, epoch: int) -> bool:
        """C^e(s) asks for the epoch-end pass over the training data (Eq. 12a with current parameters)."""
        return self._static_prototypes

    def forward_trunk(self, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Stem + stages 1-2: the shared rich feature as tokens ``(B, (l/4)^2, C)`` and its (H, W)."""
        t, H, W = self.stem(images)
        for blk in self.stage1:
            t = blk(t, H, W)
        t, H, W = self.embed2(tokens_to_map(t, H, W))
        for blk in self.stage2:
            t = blk(t, H, W)
        return t, H, W

    def _prototypes(self, source: torch.Tensor, enabled: bool | None):
        """(K, V) to intervene with, or None (no intervention). ``source``: this batch's features."""
        if enabled is False or not self.has_intervention:
            return None
        if self.training:  # "batch": Eq. 12a over the mini-batch (C^e(d)); else the stored ones
            own = training_prototype(self.prototype, source, self.confounder_scale)
            if own is not None:
                return own
        if bool(self.proto_valid):
            if self.proto_k.shape != source.shape[1:]:
                raise ValueError(
                    f"stored prototypes have shape {tuple(self.proto_k.shape)} but the features are "
                    f"{tuple(source.shape[1:])} (input size differs from img_size={self.img_size}?)"
                )
            return self.proto_k, self.proto_v
        if enabled:
            raise ValueError("intervention=True but the model has no valid sample prototypes yet")
        return None

    def forward(
        self, images: torch.Tensor, *, return_full_attention: bool = False, intervention: bool | None = None
    ) -> ModelOutput:
        """``images`` ``(B, 3, l, l)`` -> logits ``(B, A)`` and aux:

        - ``attention`` ``(B, A, l/8, l/8)``: the constrained block's attention averaged over heads
          and queries (Eq. 6);
        - ``features`` ``(B, A, C)``: pooled per-AU features f (before the intervention);
        - ``attention_logmean`` ``(B, A, l/8, l/8)`` (``attention_loss="each"`` only): mean of log A
          over heads and queries, for the per-channel L_a of A^e-Net;
        - ``attention_full`` ``(B, A, heads * N * N)`` if ``return_full_attention`` (the authors'
          ``aus_attention`` layout: head, query, key; large: 45 MB per image at 176);
        - ``rich_features`` ``(B, (l/4)^2, C)`` (shared intervention, training only, detached).

        ``intervention``: None = automatic (per the prototype mode and buffers), False = skip it
        (the authors' epoch-0 path), True = require it.
        """
        B = images.shape[0]
        rich, H, W = self.forward_trunk(images)
        aux: dict[str, torch.Tensor] = {}
        zero = None
        if self.training and torch.is_grad_enabled():
            self._skipped = ()
        if self.rich_intervention is not None:
            if self.training:
                aux["rich_features"] = rich.detach()
            proto = self._prototypes(rich, intervention)
            if proto is not None:
                k, v = proto  # one prototype per token position
                rich = self.rich_intervention(rich, k.unsqueeze(-2), v.unsqueeze(-2))
            elif self.training and torch.is_grad_enabled():
                zero = self.rich_intervention.zero_touch()
                self._skipped = tuple(f"rich_intervention.{n}" for n, _ in self.rich_intervention.named_parameters())
        rich_map = tokens_to_map(rich, H, W)

        wants = ["mean"]
        if self.attention_loss == "each":
            wants.append("logmean")
        if return_full_attention:
            wants.append("full")
        features, infos, (h, w) = self._branch_features(rich_map, wants)
        aux["features"] = features
        aux["attention"] = infos["mean"].reshape(B, self.num_aus, h, w)
        if "logmean" in wants:
            aux["attention_logmean"] = infos["logmean"].reshape(B, self.num_aus, h, w)
        if return_full_attention:
            aux["attention_full"] = infos["full"]
        logits, zero = self._branch_logits(features, intervention, zero)
        if zero is not None:
            logits = logits + zero
        return ModelOutput(logits, aux)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits only (the model contract's inference path): equal to ``forward(images).logits``,
        but no attention summary is formed, so the constrained block also runs the fused attention."""
        rich, H, W = self.forward_trunk(images)
        if self.rich_intervention is not None:
            proto = self._prototypes(rich, None)
            if proto is not None:
                k, v = proto
                rich = self.rich_intervention(rich, k.unsqueeze(-2), v.unsqueeze(-2))
        features, _, _ = self._branch_features(tokens_to_map(rich, H, W), ())
        logits, zero = self._branch_logits(features, None, None)
        return logits if zero is None else logits + zero

    def _batched(self, x: torch.Tensor) -> bool:
        """Whether stage 3 runs stacked for an input of this batch size and device.

        ``"auto"``: stacked for a batch of 1 (frame-by-frame inference) or on a non-CPU device.
        Measured on the 2-core CPU (docs/benchmarks.md): stacked is 1.10x the loop at batch 1 but
        0.99x, 0.95x and 0.90x at batches 2, 4 and 8 (the loop keeps one branch's activations in
        cache; stacking moves all m at once)."""
        if self.branch_impl != "auto":
            return self.branch_impl == "batched"
        return x.shape[0] == 1 or x.device.type != "cpu"

    def _branch_features(self, rich_map: torch.Tensor, wants: Sequence[str]):
        """Stage 3 of every AU branch: pooled features ``(B, A, C)``, attention summaries
        ``{name: (B, A, ...)}`` of the constrained block, and the stage-3 (h, w).

        ``branch_impl="batched"`` stacks the branches' weights and runs each layer once for all
        branches (:mod:`audet.models.layers.stacked`); ``"loop"`` runs the branches one after
        another. Same parameters, same maths (equal up to float rounding)."""
        if not self._batched(rich_map):
            feats, infos = [], []
            for br in self.branches:
                f, info, (h, w) = br.forward_features(rich_map, self.constrained_index, wants)
                feats.append(f)
                infos.append(info)
            out = {k: torch.stack([i[k].reshape(i[k].shape[0], -1) for i in infos], dim=1) for k in wants}
            return torch.stack(feats, dim=1), out, (h, w)
        brs = list(self.branches)
        t, h, w = stacked_patch_embed(rich_map, [b.embed for b in brs])  # (A, B, N, C)
        info: dict[str, torch.Tensor] = {}
        for k in range(len(brs[0].blocks)):
            t, i = stacked_block(t, [b.blocks[k] for b in brs], h, w, wants if k == self.constrained_index else ())
            info.update(i)
        f = stacked_layer_norm(t, [b.norm for b in brs]).mean(dim=2)  # (A, B, C)
        A, B = f.shape[:2]
        out = {k: v.transpose(0, 1).reshape(B, A, -1) for k, v in info.items()}
        return f.transpose(0, 1), out, (h, w)

    def _branch_logits(self, features: torch.Tensor, intervention: bool | None, zero: torch.Tensor | None):
        """Per-AU causal intervention (Eq. 10-13, per_au variants) and heads: logits ``(B, A)``.
        Returns the logits and the zero-valued term that keeps skipped intervention layers in the graph."""
        proto = self._prototypes(features, intervention) if self.intervention == "per_au" else None
        touch = self.intervention == "per_au" and proto is None and self.training and torch.is_grad_enabled()
        if touch:
            for br in self.branches:
                t = br.intervention.zero_touch()
                zero = t if zero is None else zero + t
            self._skipped = tuple(f"branches.{j}.intervention.{n}" for j, br in enumerate(self.branches)
                                  for n, _ in br.intervention.named_parameters())
        if not self._batched(features):
            logits = []
            for j, br in enumerate(self.branches):
                f = features[:, j]
                if proto is not None:
                    k, v = proto
                    f = br.intervention(f, k[j : j + 1], v[j : j + 1])
                logits.append(br.head(f))
            return torch.cat(logits, dim=1), zero
        f = features.transpose(0, 1)  # (A, B, C)
        if proto is not None:
            k, v = proto
            f = stacked_intervention(f, [b.intervention for b in self.branches], k.unsqueeze(1), v.unsqueeze(1))
        return stacked_linear(f, [b.head for b in self.branches]).squeeze(-1).transpose(0, 1), zero

    # ------------------------------------------------------------------------------------------
    # losses
    def loss_terms(self, output: ModelOutput, batch: dict, ctx: LossContext) -> dict[str, torch.Tensor]:
        """``au``: L_u, the weighted BCE of Eq. 14; ``attention``: lambda_a * L_a (Eq. 7, 15).

        L_a compares the constrained block's attention with ``ac2d_attention_maps`` of
        ``batch["subcenters"]`` (pixels of the input crop; Eq. 3-5), KL with element-wise mean
        reduction. A^v: on the map averaged over heads and queries (Eq. 6). A^e: on every
        (head, query) map, i.e. the mean over channels of each channel's KL, computed from the
        mean of log A without materialising the channels. B-Net: no L_a.
        """
        from audet.losses import attention_kl, weighted_bce

        terms = {"au": weighted_bce(output.logits, batch["labels"], batch["mask"], ctx.au_weight, ctx.pos_weight)}
        if self.attention_loss == "none":
            return terms
        from audet.geometry import ac2d_attention_maps

        attn = output.aux["attention"]
        side = attn.shape[-1]
        sub = batch["subcenters"].to(attn.device)
        gt = ac2d_attention_maps(sub.float(), image_size=side * 8, sigma=self.sigma)
        if self.attention_loss == "average":
            la = attention_kl(attn, gt)
        else:
            la = attention_kl(output.aux["attention_logmean"], gt, log_input=True)
        terms["attention"] = self.lambda_a * la
        return terms

    # ------------------------------------------------------------------------------------------
    # sample prototypes (cross-batch state)
    def parameters_without_gradient(self) -> tuple[str, ...]:
        """The intervention layers' parameters when the last training step skipped the
        intervention (no prototypes yet): kept in the graph by a zero term for DDP, but they took
        no part in the loss, so the engine drops their gradients (no AdamW weight decay in epoch 0
        of ``epoch_stale``, as in the authors' code, where their gradient is None)."""
        return self._skipped

    def on_train_epoch_start(self, epoch: int) -> None:
        self._proto_acc.reset()
        self._fresh_pass = False

    def on_train_batch_end(self, output: ModelOutput, batch: dict) -> None:
        """Accumulate this step's pooled features (per-AU f, or the rich feature for C^s)."""
        if not self.has_intervention:
            return
        src = output.aux.get("rich_features" if self.intervention == "shared" else "features")
        if src is not None:
            self._proto_acc.add(src)

    def on_train_epoch_end(self, epoch: int) -> None:
        """Turn the epoch's features into prototypes (all-reduced across processes)."""
        if not self.has_intervention:
            return
        if self._static_prototypes:
            if self._fresh_pass:
                self._proto_acc.reset()
                return
            if not self._warned_no_pass:
                warnings.warn(
                    "AC2D prototype='epoch' (C^e(s)) expects the engine's epoch-end data pass (data_pass_step/"
                    "data_pass_end); falling back to the features gathered during the epoch (= 'epoch_stale')",
                    stacklevel=2,
                )
                self._warned_no_pass = True
        self.finalize_prototypes()

    @torch.no_grad()
    def finalize_prototypes(self) -> bool:
        """Set the buffers from the accumulated features; idempotent (the accumulators are reset).

        Collective when ``torch.distributed`` is initialised: every process must call it.
        Returns whether the prototypes were updated.
        """
        if not self.has_intervention:
            return False
        got = self._proto_acc.finish(self.proto_k.shape, self.proto_k.device)
        if got is None:
            return False
        self.set_prototypes(*got)
        return True

    @torch.no_grad()
    def set_prototypes(self, mean_feature: torch.Tensor, count: float, value: torch.Tensor | None = None) -> None:
        """Store K = ``mean_feature`` (Eq. 12a), N = ``count`` and V (Eq. 13 or the code's K/N)."""
        if not self.has_intervention:
            raise ValueError(f"{self.model_name or 'this AC2D variant'} has no causal intervention")
        k = mean_feature.to(self.proto_k.device, torch.float64)
        if tuple(k.shape) != tuple(self.proto_k.shape):
            raise ValueError(f"prototype shape {tuple(k.shape)} != expected {tuple(self.proto_k.shape)}")
        if value is None:
            value = confounder_value(k, count, self.confounder_scale)
        self.proto_k.copy_(k.to(self.proto_k.dtype))
        self.proto_v.copy_(value.to(self.proto_v.device, self.proto_v.dtype))
        self.proto_count.fill_(float(count))
        self.proto_valid.fill_(True)

    @torch.no_grad()
    def prototype_features(self, images: torch.Tensor) -> torch.Tensor:
        """The features prototypes are averaged from, for one batch (use in the epoch-end pass)."""
        if self.intervention == "shared":
            return self.forward_trunk(images)[0]
        return self.forward(images, intervention=False).aux["features"]

    @torch.no_grad()
    def data_pass_step(self, batch: dict) -> tuple[torch.Tensor, int]:
        """One batch of the epoch-end pass: the sum (float64) and count of its prototype features."""
        return FeatureMean.batch_sum(self.prototype_features(batch["image"]))

    @torch.no_grad()
    def data_pass_end(self, results: list) -> bool:
        """Set the prototypes from the pass's ``(sum, count)`` pairs (all-reduced under DDP)."""
        self._proto_acc.reset()
        for total, n in results:
            self._proto_acc.add_sum(total, n)
        ok = self.finalize_prototypes()
        self._fresh_pass = True
        return ok


    # ------------------------------------------------------------------------------------------
    # complexity counting (audet.complexity)
    @contextlib.contextmanager
    def flop_count_context(self):
        """Count FLOPs on the inference path with the intervention (as the authors' 8.95 GFLOPs):
        temporarily installs zero prototypes when none are valid, then restores the buffers."""
        if not self.has_intervention or bool(self.proto_valid):
            yield
            return
        saved = {k: getattr(self, k).clone() for k in ("proto_k", "proto_v", "proto_count", "proto_valid")}
        try:
            self.proto_valid.fill_(True)
            yield
        finally:
            with torch.no_grad():
                for k, v in saved.items():
                    getattr(self, k).copy_(v)


# ---------------------------------------------------------------------------------------------
# registered variants (Table 8)
_COMMON_INFO = dict(
    paper="Shao et al., Facial AU detection by adaptively constraining self-attention and causally "
    "deconfounding sample (AC2D)",
    input_size=176,
    recipe=RECIPES,
    params={"12": 3_625_196, "8": 2_565_096},
    # the faithful per-branch path, timed against the default by benchmarks/model_speed.py
    reference_args={"branch_impl": "loop"},
    # tests and quick benchmarks (the tests' fallback for ac2d* until now)
    small_config={"img_size": 64, "depths": [1, 1, 2], "drop_path_rate": 0.0, "embed_dim": 16, "causal_dim": 32},
)


_VARIANTS = {
    "ac2d": ("AC2D = A^vC^e(d)", dict(attention_loss="average", intervention="per_au", prototype="batch")),
    "ac2d_bnet": ("B-Net", dict(attention_loss="none", intervention="none")),
    "ac2d_av": ("A^v-Net", dict(attention_loss="average", intervention="none")),
    "ac2d_ae": ("A^e-Net", dict(attention_loss="each", intervention="none")),
    "ac2d_avces": ("A^vC^e(s)-Net", dict(attention_loss="average", intervention="per_au", prototype="epoch")),
    "ac2d_avcsd": ("A^vC^s(d)-Net", dict(attention_loss="average", intervention="shared", prototype="batch")),
}

for _name, (_variant, _defaults) in _VARIANTS.items():
    register_model(variant_factory(AC2D, _defaults), name=_name, variant=_variant, table="Table 8", defaults=dict(_defaults), **_COMMON_INFO)
