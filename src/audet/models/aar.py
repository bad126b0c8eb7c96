"""AAR: adaptive attention and relation for facial AU detection (Shao et al.; shared/papers/aar.md).

Architecture (Fig. 2, section III; c = ``unit_dim`` = 8, l = 176, m AUs, t frames)::

    frames t x 3 x l x l  (each frame on its own)
      -> two hierarchical multi-scale region layers R^hm, each + 2x2 max pool (JAA-Net's,
         audet.models.layers.region): 8c x l/4 x l/4
      -> m AU branches (adaptive attention regression network, section III-B), each
           conv1 -> conv2 -> conv3 (3x3, BN, ReLU; 12c channels at l/4)
             -> one-channel conv (+ sigmoid) = regressed attention map M^_ij (l/4 x l/4)  [AL]
           conv4 -> (* M^_ij on every channel)  [AL] -> conv5 -> global average pool
           = f^(0)_ij (12c) -> Linear(12c, 1) = p^(0)_ij  [AL]
      -> F^(0) (t x m x 12c) -> two G^st(t, m, 12c) layers (Eq. 13: graph conv with adjacency
         N(R(U U^T)) and per-AU parameters Q W from a shared pool, c_e = 8, inside a GRU over the t
         frames; audet.models.layers.graph) -> f^(1)_ij -> per-AU Linear(12c, 1) = p^(1)_ij

Losses: L_AA = L_u^(0) (Eq. 4, weights Eq. 5) + lambda_a L_a (Eq. 3, MSE to the predefined
Gaussian maps of Eq. 1-2, lambda_a = 2) -- Eq. 6; L_u^(1) (Eq. 14) for the final prediction.

Training (section IV-A-2), as config stages (``configs/aar_*.yaml``):

- stage ``attention``: SGD, Nesterov momentum 0.9, weight decay 5e-4, lr 0.006 x 0.3 every 2
  epochs, up to 12 epochs; trains the region layers and AU branches with L_AA; during this stage
  the model's logits are p^(0) (so validation measures the attention network);
- stage ``relation``: Adam, lr 0.006 fixed, betas (0.9, 0.999), up to 12 epochs; trains the graph
  network and the final classifier with L_u^(1), the attention network frozen (eval mode).

Outside a staged run (``self.stage == ""``) every applicable term is returned (joint training).

Variants (Table VI/VII), each a registered name:

=====================  ==============  =====  ===  ===========  ===========
name                   paper           W^au   AL   graph        temporal
=====================  ==============  =====  ===  ===========  ===========
``aar_bnet``           B-Net           no     no   none         none
``aar_bwnet``          BW-Net          yes    no   none         none
``aar_aa``             AA              yes    yes  none         none
``aar_aa_gsh``         AA+G^sh         yes    yes  shared       none
``aar_aa_gsp``         AA+G^sp         yes    yes  specific     none
``aar_aa_gsp_tavg``    AA+G^sp+T^avg   yes    yes  specific     avg
``aar``                AAR             yes    yes  specific     gru (G^st)
=====================  ==============  =====  ===  ===========  ===========

Table VI gives B-Net and BW-Net only L_u^(1) (no AL, hence no p^(0)): their f^(0) goes straight to
the final per-AU classifier. AA has L_a, L_u^(0) and L_u^(1): the final classifier reads f^(0)
directly (no graph). The spatial graph variants use two Eq. 11 (G^sp) or Eq. 15 (G^sh) layers
per frame, each followed by a ReLU (the paper gives no activation for them; our choice).
T^avg averages the final probabilities over the frames of the input sequence (test-time post
processing of AA+G^sp; L_u^(1) is applied to the per-frame predictions).

Inputs: frames ``(B, 3, l, l)`` -> logits ``(B, m)``; clips ``(B, T, 3, l, l)`` -> ``(B, T, m)`` for
ANY T (the GRU runs over the given frames from h_0 = 0; a frame alone is a sequence of one).
The model's ``preprocess["clip"]`` is ``{"length": clip_length}`` (48, the paper's t); the
evaluator scores long videos in disjoint windows (every frame once).

AU branch evaluation (``branch_impl=``): ``"loop"`` runs the m branches one after another (the
reference, ``reference_args`` in the registry); ``"stacked"`` runs them as ONE stacked computation
(:func:`stacked_branches`: their weights concatenated at call time, conv1 one dense convolution with
m*12c outputs, conv2-conv5 and the attention conv grouped convolutions with ``groups=m``, BN one
``batch_norm`` over m*12c channels whose running statistics are written back into each branch, the
p^(0) heads one per-branch product). Same parameters and state_dict names, same maths: outputs,
losses, gradients and running statistics agree with the loop to float rounding
(tests/test_aar_stacked.py). ``"auto"`` (default) is stacked off the CPU and the loop on the CPU:
measured on the 2-core CPU (load average 3.1, so 1 thread; interleaved medians, full-size ``aar``,
176 px, 12 AUs), stacked vs loop: eval ``forward_logits`` batch 1 0.175 s vs 0.143 s (0.82x),
batch 8 1.635 s vs 0.986 s (0.60x); training step (forward + backward) on 2 clips of 8 frames
15.6 s vs 9.7 s (0.62x) -- a grouped 3x3 convolution (12 groups of 96 channels, 44 x 44) alone
takes 1.6x the time of the 12 separate ones there. Stacking off the CPU was not measured here.

Choices the paper leaves open (documented in docs/models/aar.md): sigmoid on the regressed
attention map (``attention_activation``), no bias in the graph layers (the paper omits it),
init of U, Q and the pools.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from audet.models.base import AUModel, DataInfo, LossContext, ModelOutput
from audet.models.layers.graph import SpatialGraphConv, SpatioTemporalGraphConv
from audet.models.layers.region import RegionLearning
from audet.models.layers.stacked import cat_conv, stacked_batch_norm, stacked_linear
from audet.models.registry import register_model, variant_factory

__all__ = [
    "AAR", "AUAttentionBranch", "PerAULinear", "stacked_branches", "GRAPHS", "TEMPORALS", "STAGES", "RECIPE",
    "BRANCH_IMPLS",
]

GRAPHS = ("none", "shared", "specific")
TEMPORALS = ("none", "avg", "gru")
WEIGHTINGS = ("paper", "none")
ATTENTION_ACTIVATIONS = ("sigmoid", "none")
#: how the m AU branches run: one after another, as one stacked computation, or chosen per input
BRANCH_IMPLS = ("auto", "stacked", "loop")
#: stage names of the two-stage recipe (section IV-A-2)
STAGES = ("attention", "relation")

#: The paper's recipe (section IV-A-2); the configs implement it as two stages.
RECIPE = {
    "attention": {"optimizer": "SGD", "nesterov": True, "momentum": 0.9, "weight_decay": 5e-4, "lr": 0.006,
                  "schedule": "x0.3 every 2 epochs", "epochs": 12, "loss": "L_AA = L_u^(0) + 2 L_a (Eq. 6)"},
    "relation": {"optimizer": "Adam", "lr": 0.006, "betas": (0.9, 0.999), "schedule": "constant", "epochs": 12,
                 "loss": "L_u^(1) (Eq. 14)"},
    "sequence_length": 48, "crop": 176, "sigma": 3.0, "lambda_a": 2.0, "pool_dim": 8,
    "source": "AAR paper, section IV-A-2",
}


def _check(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {', '.join(map(repr, choices))}")


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=True), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class AUAttentionBranch(nn.Module):
    """One AU branch of the adaptive attention regression network (section III-B).

    Five stacked 3x3 conv layers (``convs.0-4``, each conv + BN + ReLU, ``dim`` channels). With
    attention learning (AL): ``attention`` (one-channel conv after conv3) gives M^, which
    multiplies every channel of conv4's output before conv5, and ``head`` (Linear(dim, 1)) gives
    p^(0) from the pooled feature f^(0).
    """

    def __init__(self, in_dim: int, dim: int, attention: bool = True, attention_activation: str = "sigmoid"):
        super().__init__()
        self.convs = nn.ModuleList([_conv_bn_relu(in_dim, dim)] + [_conv_bn_relu(dim, dim) for _ in range(4)])
        self.attention = nn.Conv2d(dim, 1, 3, 1, 1, bias=True) if attention else None
        self.head = nn.Linear(dim, 1) if attention else None
        self.attention_activation = attention_activation

    def forward(self, x: torch.Tensor):
        """``x`` ``(N, in_dim, h, w)`` -> ``(f0 (N, dim), map (N, h, w) | None, logit0 (N,) | None)``."""
        y = self.convs[2](self.convs[1](self.convs[0](x)))
        att = None
        z = self.convs[3](y)
        if self.attention is not None:
            att = self.attention(y)
            if self.attention_activation == "sigmoid":
                att = torch.sigmoid(att)
            z = z * att  # M^_ij on each channel of the fourth conv feature map
        f = self.convs[4](z).mean(dim=(-2, -1))  # conv5 + global average pooling -> f^(0)_ij
        logit = self.head(f).squeeze(-1) if self.head is not None else None
        return f, (att.squeeze(1) if att is not None else None), logit


def _stacked_conv_bn_relu(x: torch.Tensor, layers: Sequence[nn.Sequential], groups: int) -> torch.Tensor:
    """conv + BN + ReLU of every branch: ``groups=1`` on a shared input (one dense conv with A*C
    outputs), ``groups=A`` on per-branch maps ``(N, A*C_in, h, w)`` (one grouped conv)."""
    c = layers[0][0]
    w, b = cat_conv([seq[0] for seq in layers])
    y = F.conv2d(x, w, b, c.stride, c.padding, c.dilation, groups)
    return F.relu(stacked_batch_norm(y, [seq[1] for seq in layers]), inplace=True)


def stacked_branches(x: torch.Tensor, branches: Sequence[AUAttentionBranch]):
    """Every :class:`AUAttentionBranch` on the SHARED region map ``x`` ``(N, in_dim, h, w)`` as ONE
    stacked computation: ``(f0 (N, A, dim), maps (N, A, h, w) | None, logits0 (N, A) | None)``,
    i.e. the per-branch outputs stacked on dim 1.

    The branches' weights are concatenated at call time (``torch.cat``; gradients reach the
    original parameters, state_dict names do not change): conv1 of all branches is one convolution
    with A*dim outputs, conv2-conv5 grouped convolutions (``groups=A``), BN one ``F.batch_norm`` over
    A*dim channels (running statistics written back per branch), the attention conv a grouped conv
    A*dim -> A, the heads p^(0) a per-branch dot product. The maths is the loop's term by term
    (section III-B), so outputs and gradients equal it up to float rounding.
    """
    brs = list(branches)
    A, b0 = len(brs), brs[0]
    y = _stacked_conv_bn_relu(x, [br.convs[0] for br in brs], 1)
    y = _stacked_conv_bn_relu(y, [br.convs[1] for br in brs], A)
    y = _stacked_conv_bn_relu(y, [br.convs[2] for br in brs], A)  # conv3 output (N, A*dim, h, w)
    z = _stacked_conv_bn_relu(y, [br.convs[3] for br in brs], A)
    att = None
    if b0.attention is not None:
        a0 = b0.attention
        w, b = cat_conv([br.attention for br in brs])  # (A, dim, 3, 3)
        att = F.conv2d(y, w, b, a0.stride, a0.padding, a0.dilation, A)  # (N, A, h, w)
        if b0.attention_activation == "sigmoid":
            att = torch.sigmoid(att)
        N, _, h, wd = z.shape
        z = (z.reshape(N, A, -1, h, wd) * att.unsqueeze(2)).reshape(N, -1, h, wd)  # M^_ij on each channel
    f = _stacked_conv_bn_relu(z, [br.convs[4] for br in brs], A).mean(dim=(-2, -1))  # conv5 + GAP
    f = f.reshape(f.shape[0], A, -1)  # f^(0) (N, A, dim)
    logit = None
    if b0.head is not None:  # each branch's Linear(dim, 1) on its own f^(0)
        logit = stacked_linear(f.transpose(0, 1), [br.head for br in brs]).squeeze(-1).t()  # (N, A)
    return f, att, logit


class PerAULinear(nn.Module):
    """m independent one-dimensional fully-connected layers: ``(..., m, c)`` -> ``(..., m)``."""

    def __init__(self, num_aus: int, dim: int):
        super().__init__()
        bound = 1.0 / dim ** 0.5
        self.weight = nn.Parameter(torch.empty(num_aus, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_aus).uniform_(-bound, bound))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return (f * self.weight).sum(dim=-1) + self.bias


class AAR(AUModel):
    """AAR and its Table VI variants; see the module docstring for every option."""

    au_module_lists = ("branches",)
    au_state_keys = {"relation.*.U": 0, "relation.*.Q": 0, "classifier.weight": 0, "classifier.bias": 0}

    def __init__(
        self,
        aus: Sequence[int],
        *,
        data: DataInfo | None = None,
        unit_dim: int = 8,
        feature_dim: int | None = None,
        pool_dim: int = 8,
        attention_learning: bool = True,
        weighting: str = "paper",
        graph: str = "specific",
        temporal: str = "gru",
        attention_activation: str = "sigmoid",
        lambda_a: float = 2.0,
        sigma: float = 3.0,
        img_size: int = 176,
        in_chans: int = 3,
        clip_length: int | None = 48,
        branch_impl: str = "auto",
        preprocess: dict | None = None,
    ):
        _check("weighting", weighting, WEIGHTINGS)
        _check("graph", graph, GRAPHS)
        _check("temporal", temporal, TEMPORALS)
        _check("attention_activation", attention_activation, ATTENTION_ACTIVATIONS)
        _check("branch_impl", branch_impl, BRANCH_IMPLS)
        if temporal == "gru" and graph == "none":
            raise ValueError("temporal='gru' is the G^st layer (Eq. 13), a graph GRU: it needs graph='specific' "
                             "(AAR) or 'shared'")
        if img_size % 16:
            raise ValueError(f"img_size must be divisible by 16 (two region layers with 8x8 patch grids and two "
                             f"poolings); got {img_size}")
        if clip_length is not None and int(clip_length) < 1:
            raise ValueError(f"clip_length must be >= 1 or None, got {clip_length}")
        clip = {"length": int(clip_length)} if clip_length else None
        pre = {"crop_size": int(img_size), "clip": clip, **(preprocess or {})}
        super().__init__(aus, pre, data=data)
        feature_dim = int(feature_dim or 12 * unit_dim)
        self.attention_learning = bool(attention_learning)
        self.weighting = weighting
        self.graph = graph
        self.temporal = temporal
        self.lambda_a = float(lambda_a)
        self.sigma = float(sigma)
        self.img_size = int(img_size)
        self.feature_dim = feature_dim
        #: "stacked": the m AU branches run as one stacked computation; "loop": one after another;
        #: "auto" (default): see :meth:`_stacked`
        self.branch_impl = branch_impl

        self.region_learning = RegionLearning(in_chans, unit_dim)
        self.branches = nn.ModuleList(
            AUAttentionBranch(self.region_learning.out_channels, feature_dim, self.attention_learning,
                              attention_activation)
            for _ in range(self.num_aus)
        )
        if graph == "none":
            self.relation = None
        elif temporal == "gru":
            self.relation = nn.ModuleList(
                SpatioTemporalGraphConv(self.num_aus, feature_dim, pool_dim, specific=graph == "specific")
                for _ in range(2)
            )
        else:
            self.relation = nn.ModuleList(
                SpatialGraphConv(self.num_aus, feature_dim, feature_dim, pool_dim, specific=graph == "specific")
                for _ in range(2)
            )
        self.classifier = PerAULinear(self.num_aus, feature_dim)

    # ------------------------------------------------------------------------------------------
    # forward
    def forward_features(self, images: torch.Tensor):
        """Adaptive attention regression network on every frame.

        Returns ``(f0, logits0, maps, is_clip)`` with a time axis always present: f^(0)
        ``(B, T, m, C)``, p^(0) logits ``(B, T, m)`` and maps M^ ``(B, T, m, l/4, l/4)`` (None
        without AL); ``is_clip`` says whether the input had a time axis.
        """
        if images.dim() == 5:
            B, T = images.shape[:2]
            is_clip = True
        elif images.dim() == 4:
            B, T = images.shape[0], 1
            is_clip = False
        else:
            raise ValueError(f"AAR expects frames (B, 3, H, W) or clips (B, T, 3, H, W), got {tuple(images.shape)}")
        x = self.region_learning(images.reshape(B * T, *images.shape[-3:]))
        f0, mp, lg0 = self._branch_outputs(x)
        f0 = f0.reshape(B, T, self.num_aus, -1)
        if self.attention_learning:
            lg0 = lg0.reshape(B, T, self.num_aus)
            mp = mp.reshape(B, T, self.num_aus, *mp.shape[-2:])
        else:
            lg0 = mp = None
        return f0, lg0, mp, is_clip

    def _stacked(self, x: torch.Tensor) -> bool:
        """Whether the AU branches run stacked for the region map ``x`` ``(N, C, h, w)``.

        ``"auto"``: stacked off the CPU (one grouped kernel per layer instead of m small ones),
        the loop on the CPU at every batch size: measured on the 2-core CPU (1 thread, full-size
        ``aar`` at 176 px, 12 AUs; see the module docstring) stacked is 0.82x the loop's speed at
        batch 1, 0.60x at batch 8 and 0.62x for a training step, because oneDNN's grouped 3x3
        convolution is slower than the m separate ones."""
        if self.branch_impl != "auto":
            return self.branch_impl == "stacked"
        return x.device.type != "cpu"

    def _branch_outputs(self, x: torch.Tensor):
        """All m branches on the region map ``x`` ``(N, C, h, w)``: f^(0) ``(N, m, dim)``, M^
        ``(N, m, h, w)`` and p^(0) logits ``(N, m)`` (None without AL).

        ``branch_impl="stacked"`` runs them as one stacked computation (:func:`stacked_branches`),
        ``"loop"`` one after another; same parameters, same maths (equal up to float rounding)."""
        if self._stacked(x):
            return stacked_branches(x, self.branches)
        feats, maps, logits0 = [], [], []
        for br in self.branches:
            f, m, lg = br(x)
            feats.append(f)
            maps.append(m)
            logits0.append(lg)
        if not self.attention_learning:
            return torch.stack(feats, dim=1), None, None
        return torch.stack(feats, dim=1), torch.stack(maps, dim=1), torch.stack(logits0, dim=1)

    def relate(self, f0: torch.Tensor) -> torch.Tensor:
        """The relational reasoning on F^(0) ``(B, T, m, C)`` -> f^(1) ``(B, T, m, C)``."""
        if self.relation is None:
            return f0
        F = f0
        for layer in self.relation:
            F = layer(F) if self.temporal == "gru" else torch.relu(layer(F))
        return F

    def _heads(self, feats):
        """``(final logits, per-frame p^(1) logits, logits0, maps, is_clip)`` with time axes."""
        f0, lg0, mp, is_clip = feats
        lg1 = self.classifier(self.relate(f0))  # (B, T, m)
        final = lg1
        if self.temporal == "avg":  # T^avg: mean probability over the frames of the sequence
            p = torch.sigmoid(lg1).mean(dim=1, keepdim=True).expand_as(lg1)
            final = torch.logit(p, eps=1e-6)
        return final, lg1, lg0, mp, is_clip

    def _uses_p0(self) -> bool:
        return self.attention_learning and self.stage == STAGES[0]

    def forward_head(self, feats) -> torch.Tensor:
        """Per-AU logits: p^(0) while training the attention stage, else the final p^(1)."""
        f0, lg0, mp, is_clip = feats
        logits = lg0 if self._uses_p0() else self._heads(feats)[0]
        return logits if is_clip else logits[:, 0]

    def forward(self, images: torch.Tensor) -> ModelOutput:
        """Training path: logits as :meth:`forward_head`; aux ``logits0`` (p^(0)), ``logits1``
        (per-frame p^(1), before T^avg) and ``attention`` (M^), shaped like the input (a time axis
        for clips)."""
        feats = self.forward_features(images)
        final, lg1, lg0, mp, is_clip = self._heads(feats)
        logits = lg0 if self._uses_p0() else final
        sq = (lambda t: t) if is_clip else (lambda t: t[:, 0] if t is not None else None)
        aux = {"logits1": sq(lg1)}
        if lg0 is not None:
            aux["logits0"] = sq(lg0)
            aux["attention"] = sq(mp)
        return ModelOutput(sq(logits), aux)

    # ------------------------------------------------------------------------------------------
    # losses
    def loss_terms(self, output: ModelOutput, batch: dict, ctx: LossContext) -> dict[str, torch.Tensor]:
        """``au0`` = L_u^(0) (Eq. 4), ``attention`` = lambda_a L_a (Eq. 3; their sum is L_AA, Eq. 6),
        ``au1`` = L_u^(1) (Eq. 14).

        Stage ``attention``: au0 + attention (AL variants); stage ``relation``: au1; no stage:
        all. Variants without AL (B-Net, BW-Net) always train au1 only. Weights w_j, v_j of Eq. 5
        from ``ctx``; B-Net (``weighting="none"``) uses w_j = 1/m, v_j = 1.
        """
        from audet.losses import aar_attention_regression_loss, weighted_bce

        w, v = (ctx.au_weight, ctx.pos_weight) if self.weighting == "paper" else (None, None)
        labels, mask = batch["labels"], batch["mask"]
        terms: dict[str, torch.Tensor] = {}
        stage = self.stage
        if self.attention_learning and stage in ("", STAGES[0]):
            terms["au0"] = weighted_bce(output.aux["logits0"], labels, mask, w, v)
            terms["attention"] = self.lambda_a * aar_attention_regression_loss(
                output.aux["attention"], self.predefined_attention(batch["subcenters"]))
        if not self.attention_learning or stage != STAGES[0]:
            terms["au1"] = weighted_bce(output.aux["logits1"], labels, mask, w, v)
        return terms

    def predefined_attention(self, subcenters: torch.Tensor) -> torch.Tensor:
        """M of Eq. 1-2 from the batch's sub-centres ``(..., m, 2, 2)`` (pixels of the crop) ->
        ``(..., m, l/4, l/4)`` (:func:`audet.geometry.aar_attention_maps`)."""
        from audet.geometry import aar_attention_maps

        return aar_attention_maps(subcenters.float(), image_size=self.img_size, sigma=self.sigma)

    # ------------------------------------------------------------------------------------------
    # stages
    def on_stage_start(self, stage: str) -> None:
        """Sets ``self.stage``; ``attention`` and ``relation`` are the paper's two stages (any other
        name trains every applicable term)."""
        super().on_stage_start(stage)


# ---------------------------------------------------------------------------------------------
# registered variants (Table VI / VII)
_COMMON_INFO = dict(
    paper="Shao et al., Facial action unit detection via adaptive attention and relation (AAR)",
    input_size=176,
    recipe=RECIPE,
    table="Table VI/VII",
    params={"paper": "7.2M", "12": 7_175_364, "8": 5_616_952},
    flops={"paper": "10.2G", "gmacs_per_frame": 9.59},
    #: a tiny configuration for fast tests (32 px, c = 1, c_e = 2, 3-frame clips)
    small_config={"img_size": 32, "unit_dim": 1, "pool_dim": 2, "clip_length": 3},
    # the faithful per-branch path, timed against the default by benchmarks/model_speed.py
    reference_args={"branch_impl": "loop"},
)

_VARIANTS = {
    "aar_bnet": ("B-Net", dict(attention_learning=False, weighting="none", graph="none", temporal="none")),
    "aar_bwnet": ("BW-Net", dict(attention_learning=False, weighting="paper", graph="none", temporal="none")),
    "aar_aa": ("AA", dict(attention_learning=True, graph="none", temporal="none")),
    "aar_aa_gsh": ("AA+G^sh", dict(attention_learning=True, graph="shared", temporal="none")),
    "aar_aa_gsp": ("AA+G^sp", dict(attention_learning=True, graph="specific", temporal="none")),
    "aar_aa_gsp_tavg": ("AA+G^sp+T^avg", dict(attention_learning=True, graph="specific", temporal="avg")),
    "aar": ("AAR", dict(attention_learning=True, graph="specific", temporal="gru")),
}


for _name, (_variant, _defaults) in _VARIANTS.items():
    register_model(variant_factory(AAR, _defaults), name=_name, variant=_variant, defaults=dict(_defaults), **_COMMON_INFO)
