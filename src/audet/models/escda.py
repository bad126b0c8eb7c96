"""ESCDA: constrained and directional ensemble attention (Shao et al., Pattern Recognit. 2025; escda.md).

Two networks on the same backbone (:class:`audet.models.layers.mobileface.MixFaceNet`: MobileFaceNet
with MixConv and coordinate attention, ``c = 512`` channels at ``h x h = 7 x 7`` for the 112 x 112
input, section 3.1.1 and 4.1.2), and their ensemble:

- **LSC** (local self-attention constraining, section 3.1): ``m`` AU branches, each a Next
  Transformer Block whose self-attention is multiplied by a predefined mask (Eq. 1-6), then a
  GDConv (global depthwise convolution + BN) and a ``Linear(c, 1)``.
- **GDA** (global dual-directional attention, section 3.2): the backbone map multiplied by the
  dual-directional attention map (:class:`audet.models.layers.directional.DirectionalAttention`),
  one GDConv and a ``Linear(c, m)``.
- **ESCDA** (section 3.3): ``p = (p_L + p_G) / 2``; **ESCDA-V** the voting ensemble: the
  contract's :class:`audet.models.ensemble.Ensemble` with ``combine="mean"`` / ``"vote"`` over the
  two members (trained together: the loss is ``m0/au + m1/au``, LSC's and GDA's own Eq. 7). The
  vote's tie (one member yes, one no) counts as occurrence, i.e. the decision of the larger
  probability, as section 4.3.3 describes ("taking the maximum value of two models").

Both networks use the weighted AU loss of Eq. 7-8 (:func:`audet.losses.escda_weighted_loss`,
:func:`audet.losses.escda_au_weights`, identical to the default loss context of every model).

Predefined mask (Eq. 1-3). The engine gives the model images only (``model(images)``, the
contract's ``forward_logits``), so the mask is one fixed map per AU ("we predefine a mask M_i for
the i-th AU"): the Gaussian max map (Eq. 1-2, ``delta = 3`` cells) of the AU's two sub-centres
(protocol section 1) on the ``h x h`` grid, computed from a mean aligned face
(:data:`TEMPLATE49`: the synthetic generator's neutral template aligned by protocol section 2;
override with ``mask_landmarks=`` -- 49 (x, y) points in the 200 x 200 aligned face, e.g. the mean
of your training landmarks). Eq. 3 then gives ``M_i = (M~_i + eps_i) / (1 + eps_i)`` with
``eps_i = softplus(rho_i) >= 0`` learnable (``constraint="adaptive"``, LSC), ``eps_i = 0``
(``"fixed"``, LSC^(fix)) or no mask (``"none"``, LS).

Input. The paper crops 176 x 176 from the 200 x 200 aligned face and resizes it to 112 x 112. The
data pipeline serves the 176 crop (``preprocess["crop_size"] = 176``); the model resizes it to
``preprocess["input_size"] = 112`` (bilinear with antialiasing, as torchvision's ``Resize``) as the
first step of ``forward_features``. A 112 x 112 input is used as is.

Branch evaluation (``branch_impl=``, LSC and the ensembles' LSC member; no parameter, no
state_dict name changes). ``"loop"`` runs the ``A`` AU branches one after another (the paper's
structure; the registry's ``reference_args``); ``"stacked"`` runs them as ONE computation
(:mod:`audet.models.layers.stacked_ntb`: the branch weights concatenated at call time, one dense
product for the ``A`` patch embeddings of the shared map, ``baddbmm`` for every later 1x1 conv and
Linear, one grouped conv for MHCA, BatchNorm over ``A * c`` channels with each branch's running
statistics written back, the branches folded into the attention batch with their own masks
``M_i``). Same maths: logits, attention maps, gradients (eps_i too) and BN statistics agree to
float rounding (tests/test_escda_stacked.py). ``"auto"`` (default): the loop on the CPU, stacked
off it. Measured on the 2-core CPU, full-size ``escda_lsc`` at 112 (docs/models/escda.md): with 1
thread stacking gained 1.03-1.08x from batch 2 up, but with the default 2 threads (the speed
benchmark, idle machine) it LOST: loop / stacked time 1.02x at batch 1, 0.85-0.88x at batch 32,
0.97-1.00x for a training step at batch 8.

Registered variants (Tables 5-6):

===============  ===========  =========================================================
name             paper        structure
===============  ===========  =========================================================
escda_ls         LS           B + N (vanilla NTB) + C + L_u
escda_lsc_fix    LSC^(fix)    B + N^c + M^(fix) (eps_i = 0)
escda_lsc        LSC          B + N^c + M^(ada) (learnable eps_i >= 0)
escda_ua         UA           B + A^u (unidirectional attention, vertical by default)
escda_gda        GDA          B + A^d (dual-directional attention)
escda_v          ESCDA-V      LSC + GDA, voting ensemble (E^v)
escda            ESCDA        LSC + GDA, averaging ensemble (E^a)
===============  ===========  =========================================================

Pretraining. The paper initialises both backbones from MS-Celeb-1M face-recognition training.
Those weights are not available here: by default the backbone starts from random weights; a
user's file is accepted through the contract's pretrained parts (``backbone_weights=PATH``:
our safetensors or a published MFN state dict, see :func:`load_backbone_weights`).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audet.models.base import AUModel, DataInfo, LossContext, ModelOutput, PretrainedPart
from audet.models.ensemble import Ensemble, ensemble
from audet.models.layers.directional import DirectionalAttention
from audet.models.layers.mobileface import LinearBlock, MixFaceNet
from audet.models.layers.ntb import NextTransformerBlock
from audet.models.layers.stacked import stacked_linear
from audet.models.layers.stacked_ntb import stacked_gdconv, stacked_ntb
from audet.models.registry import register_model, variant_factory

__all__ = [
    "LSC",
    "GDA",
    "TEMPLATE49",
    "template_subcenters",
    "predefined_mask",
    "lsc_mask",
    "load_backbone_weights",
    "CONSTRAINTS",
    "BRANCH_IMPLS",
    "RECIPE",
]

log = logging.getLogger(__name__)

CONSTRAINTS = ("adaptive", "fixed", "none")
BRANCH_IMPLS = ("auto", "stacked", "loop")

#: Training recipe of section 4.1.2 (both networks identically).
RECIPE = {
    "optimizer": "AdamW", "base_lr": 3.2e-2, "lr_rule": "base_lr * batch_size / 256", "weight_decay": 0.05,
    "epochs": 20, "warmup_epochs": 5, "schedule": "cosine", "grad_clip_norm": 3.0,
    "augmentation": "random 176 crop of the 200 aligned face, resize 112, mirror, brightness/contrast jitter",
    "source": "ESCDA paper, section 4.1.2",
}

#: A mean aligned face: 49 (x, y) points in the 200 x 200 aligned image (protocol section 2), the
#: neutral template of :mod:`audet.data.synth.face_model` put through :func:`audet.geometry.align_face`'s
#: alignment (rounded to 0.1 px). Used for the predefined LSC masks (Eq. 1-2).
TEMPLATE49 = (
    (42.6, 48.8), (51.8, 41.5), (63.4, 38.4), (74.4, 39.7), (86.1, 43.3), (112.9, 43.3), (124.6, 39.7),
    (135.6, 38.4), (147.2, 41.5), (156.4, 48.8), (99.5, 62.3), (99.5, 75.7), (99.5, 88.6), (99.5, 100.8),
    (87.3, 108.1), (93.4, 110.6), (99.5, 111.8), (105.6, 110.6), (111.7, 108.1), (53.7, 66.0), (62.2, 60.8),
    (75.0, 60.5), (84.2, 66.0), (75.0, 69.0), (62.8, 69.0), (114.8, 66.0), (124.0, 60.5), (136.8, 60.8),
    (145.3, 66.0), (136.2, 69.0), (124.0, 69.0), (73.8, 133.8), (83.0, 129.5), (93.4, 126.5), (99.5, 127.7),
    (105.6, 126.5), (116.0, 129.5), (125.2, 133.8), (116.6, 139.3), (106.8, 142.4), (99.5, 143.0),
    (92.2, 142.4), (82.4, 139.3), (92.2, 133.1), (99.5, 133.2), (106.8, 133.1), (106.8, 133.6), (99.5, 133.7),
    (92.2, 133.6),
)  # fmt: skip


def _check(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {', '.join(map(repr, choices))}")


# ---------------------------------------------------------------------------------------------
# predefined masks (Eq. 1-3)
def template_subcenters(aus: Sequence[int], landmarks49=None, aligned_size: int = 200, crop_size: int = 176,
                        input_size: int = 112) -> np.ndarray:
    """AU sub-centres ``(A, 2, 2)`` in pixels of the network input for a mean face.

    ``landmarks49`` (default :data:`TEMPLATE49`) are in the ``aligned_size`` aligned face; the centre
    ``crop_size`` crop shifts them by ``round((aligned - crop) / 2)`` and the resize to ``input_size``
    scales them keeping pixel centres (``x' = (x + 0.5) s - 0.5``), as the data pipeline does.
    """
    from audet.facs import au_subcenters

    lm = np.asarray(TEMPLATE49 if landmarks49 is None else landmarks49, dtype=np.float64)
    if lm.shape != (49, 2):
        raise ValueError(f"mask_landmarks must be 49 (x, y) points of the aligned face, got shape {lm.shape}")
    sub = np.asarray(au_subcenters(lm, list(aus)), dtype=np.float64)
    sub = sub - round((aligned_size - crop_size) / 2.0)
    s = input_size / crop_size
    return (sub + 0.5) * s - 0.5


def predefined_mask(subcenters, map_size: int, image_size: int, sigma: float = 3.0) -> torch.Tensor:
    """ESCDA Eq. 1-2: ``M~_i`` = max of the two sub-centres' Gaussians (std ``sigma`` = delta cells)
    on the ``map_size`` grid; ``subcenters`` ``(A, 2, 2)`` in pixels of the ``image_size`` input."""
    from audet.geometry import gaussian_au_maps

    return torch.as_tensor(gaussian_au_maps(np.asarray(subcenters, dtype=np.float64), map_size, image_size, sigma),
                           dtype=torch.float32)


def lsc_mask(base: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """ESCDA Eq. 3: ``M = (M~ + eps) / (1 + eps)``, values in (0, 1]; differentiable in ``eps >= 0``."""
    return (base + eps) / (1 + eps)


# ---------------------------------------------------------------------------------------------
# pretrained backbone
def load_backbone_weights(module: nn.Module, path: str) -> None:
    """Read a backbone state dict into :class:`MixFaceNet` ``module``.

    Accepts a ``.safetensors`` file of our backbone, or a PyTorch file (``torch.load``, weights
    only) holding a published MFN state dict (optionally under ``state_dict``/``model``, with
    ``module.``/``features.``/``backbone.`` prefixes): names are mapped by
    :func:`audet.models.convert.escda.mfn_to_backbone`; tensors the backbone has no place for (the
    face-recognition head, unused MixConv norms) are ignored and logged. Every backbone tensor must
    be found with the right shape.
    """
    from audet.models.convert.escda import mfn_to_backbone

    p = str(path)
    if p.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(p)
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
    own = module.state_dict()
    mapped, ignored = mfn_to_backbone(state, own)
    missing = [k for k in own if k not in mapped]
    bad = [k for k in mapped if tuple(mapped[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        raise ValueError(
            f"backbone weights {p}: {len(missing)} backbone tensors missing (e.g. {missing[:3]}) and {len(bad)} "
            f"with other shapes (e.g. {[(k, tuple(mapped[k].shape), tuple(own[k].shape)) for k in bad[:3]]}); "
            "the file must hold the full-width backbone (width=1.0) or our safetensors of the same configuration")
    module.load_state_dict(mapped, strict=True)
    if ignored:
        log.info("backbone weights %s: ignored %d tensors outside the backbone (e.g. %s)", p, len(ignored), ignored[:3])


def _backbone_part(module: str = "backbone") -> PretrainedPart:
    return PretrainedPart(
        module=module,
        description="ESCDA backbone (MobileFaceNet + MixConv + coordinate attention) pretrained on MS-Celeb-1M",
        source="your own face-recognition pretraining of this backbone, or a published MFN (mixed-feature "
               "MobileFaceNet) MS-Celeb-1M state dict (e.g. the MFN_msceleb.pth shipped with DDAMFN); see "
               "docs/models/escda.md",
        option="backbone_weights",
        loader=load_backbone_weights,
        frozen=False,
        store_in_checkpoint=True,
        required=False,
    )


# ---------------------------------------------------------------------------------------------
# the two networks
class _ESCDANet(AUModel):
    """Shared parts of LSC and GDA: backbone, input resize, pretrained part, options."""

    def __init__(self, aus, *, width, depths, out_channels, input_size, crop_size, in_chans,
                 mixconv_norm, backbone_weights, allow_random_pretrained, preprocess, data):
        input_size, crop_size = int(input_size), int(crop_size)
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16 (the backbone's stride); got {input_size}")
        pre = {"crop_size": crop_size, "input_size": input_size, **(preprocess or {})}
        super().__init__(aus, pre, data)
        self.input_size = input_size
        self.in_chans = int(in_chans)
        self.map_size = input_size // 16
        self.backbone = MixFaceNet(width=width, depths=depths, out_channels=out_channels, in_chans=in_chans,
                                   mixconv_norm=mixconv_norm)
        self.channels = self.backbone.out_channels

    def _init_weights(self) -> None:
        """Our choice (the paper gives none): Kaiming-normal convolutions, trunc-normal(0.02) attention
        Linears (Next-ViT's), zero biases; the AU classifiers (``fc``) keep PyTorch's default init."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and not name.endswith("fc"):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _resize_matrix(self, side: int) -> torch.Tensor:
        """``(input_size, side)`` weights R of the antialiased bilinear resize along one axis, so that
        the 2-D resize is ``R X R^T`` (it is separable)."""
        eye = torch.eye(side, dtype=torch.float64)[None, None]
        return F.interpolate(eye, size=(self.input_size, side), mode="bilinear", align_corners=False,
                             antialias=True)[0, 0].float()

    def resize_input(self, images: torch.Tensor) -> torch.Tensor:
        """The 176 crop -> ``input_size`` (bilinear, antialiased); unchanged when already that size.

        Under ONNX export / tracing the same resize runs as two matrix products with precomputed
        weights (``_upsample_bilinear2d_aa`` has no ONNX form); eager mode uses ``F.interpolate``
        (identical up to float rounding, and not counted as FLOPs, like the paper's 112 input).
        """
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"{self.model_name or type(self).__name__} takes frames B x "
                             f"{self.in_chans} x H x W, got {tuple(images.shape)}")
        H, W = int(images.shape[-2]), int(images.shape[-1])
        if (H, W) == (self.input_size, self.input_size):
            return images
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            if H != W:
                raise ValueError(f"ONNX export of the resize needs a square input; got {H}x{W}")
            r = self._resize_matrix(H).to(images.device, images.dtype)
            return r @ images @ r.T
        return F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                             align_corners=False, antialias=True)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone map ``(B, c, h, h)`` of the resized input."""
        return self.backbone(self.resize_input(images))

    def forward(self, images: torch.Tensor) -> ModelOutput:
        return ModelOutput(self.forward_head(self.forward_features(images)))

    def loss_terms(self, output: ModelOutput, batch: dict, ctx: LossContext) -> dict[str, torch.Tensor]:
        """``au``: the weighted AU detection loss L_u (Eq. 7, weights of Eq. 8 in ``ctx``)."""
        from audet.losses import escda_weighted_loss

        return {"au": escda_weighted_loss(output.logits, batch["labels"], batch["mask"], ctx.au_weight, ctx.pos_weight)}

    def pretrained_parts(self) -> dict[str, PretrainedPart]:
        return {"backbone": _backbone_part()}


class LSCBranch(nn.Module):
    """One AU branch of LSC: NTB (with the Eq. 3 mask) -> GDConv -> Linear(c, 1)."""

    def __init__(self, channels: int, map_size: int, constraint: str, eps_init: float, head_dim: int,
                 mix_block_ratio: float, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.constraint = constraint
        self.ntb = NextTransformerBlock(channels, channels, head_dim, mix_block_ratio, mlp_ratio, drop_path)
        self.gdconv = LinearBlock(channels, channels, map_size, groups=channels)
        self.fc = nn.Linear(channels, 1)
        if constraint == "adaptive":
            if eps_init <= 0:
                raise ValueError(f"eps_init must be > 0 for the adaptive constraint (eps = softplus(rho)); got {eps_init}")
            # rho with softplus(rho) = eps_init
            self.eps_rho = nn.Parameter(torch.tensor(float(np.log(np.expm1(eps_init)))))

    def eps(self) -> torch.Tensor | None:
        """eps_i of Eq. 3 (``softplus(rho_i) >= 0``; 0 for LSC^(fix); None without a mask)."""
        if self.constraint == "adaptive":
            return F.softplus(self.eps_rho)
        if self.constraint == "fixed":
            return torch.zeros((), device=self.fc.weight.device)
        return None

    def forward(self, x: torch.Tensor, base_mask: torch.Tensor, return_attention: bool = False):
        eps = self.eps()
        mask = lsc_mask(base_mask.flatten(), eps) if eps is not None else None
        out = self.ntb(x, mask, return_attention=return_attention)
        y, attn = out if return_attention else (out, None)
        logit = self.fc(self.gdconv(y).flatten(1))
        return logit, attn


class LSC(_ESCDANet):
    """Local self-attention constraining network (section 3.1) and its LS / LSC^(fix) variants."""

    au_module_lists = ("branches",)

    def __init__(
        self, aus: Sequence[int], *,
        constraint: str = "adaptive", eps_init: float = 0.1, sigma: float = 3.0, mask_landmarks=None,
        head_dim: int = 32, mix_block_ratio: float = 0.75, mlp_ratio: float = 2.0, drop_path_rate: float = 0.0,
        width: float = 1.0, depths: Sequence[int] | None = None, out_channels: int | None = None,
        input_size: int = 112, crop_size: int = 176, in_chans: int = 3, mixconv_norm: bool = False,
        backbone_weights: str | None = None, allow_random_pretrained: bool = False,
        branch_impl: str = "auto", preprocess: dict | None = None, data: DataInfo | None = None,
    ):
        _check("constraint", constraint, CONSTRAINTS)
        _check("branch_impl", branch_impl, BRANCH_IMPLS)
        super().__init__(aus, width=width, depths=depths, out_channels=out_channels, input_size=input_size,
                         crop_size=crop_size, in_chans=in_chans, mixconv_norm=mixconv_norm,
                         backbone_weights=backbone_weights, allow_random_pretrained=allow_random_pretrained,
                         preprocess=preprocess, data=data)
        self.constraint = constraint
        #: "stacked": the A branches as one computation; "loop": one after another; "auto": see _stacked
        self.branch_impl = branch_impl
        self.branches = nn.ModuleList(
            LSCBranch(self.channels, self.map_size, constraint, eps_init, head_dim, mix_block_ratio, mlp_ratio,
                      drop_path_rate)
            for _ in range(self.num_aus)
        )
        self._init_weights()
        sub = template_subcenters(self.aus, mask_landmarks, crop_size=crop_size, input_size=input_size)
        # M~_i of Eq. 1-2, one per AU; derived from the config, so not stored in checkpoints
        self.register_buffer("mask_base", predefined_mask(sub, self.map_size, input_size, sigma), persistent=False)

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith("eps_rho")}

    def eps(self) -> torch.Tensor | None:
        """eps_i of every branch ``(A,)`` (None for LS)."""
        e = [br.eps() for br in self.branches]
        return None if e[0] is None else torch.stack(e)

    def masks(self) -> torch.Tensor | None:
        """The masks M_i of Eq. 3 ``(A, h, h)`` (None for LS)."""
        eps = self.eps()
        return None if eps is None else lsc_mask(self.mask_base, eps[:, None, None])

    def _stacked(self, x: torch.Tensor) -> bool:
        """Whether the branches run stacked for an input of this batch size and device.

        ``"auto"``: the loop on the CPU at every batch size, stacked off the CPU. Measured on the
        2-core CPU, full-size ``escda_lsc`` at 112 (docs/models/escda.md, "Stacked branches"):
        with 1 thread stacked was 1.03-1.08x faster from batch 2 up, but with the default 2
        threads (``benchmarks/model_speed.py``, idle machine) it was 0.85-0.88x the loop at batch
        32 and 0.97-1.00x for a training step: stacking copies the branch weights (23.6M values)
        on every call and its batched products scale worse over two threads than the loop's."""
        if self.branch_impl != "auto":
            return self.branch_impl == "stacked"
        return x.device.type != "cpu"

    def _stacked_branches(self, features: torch.Tensor, return_attention: bool = False):
        """All branches as ONE computation (:mod:`audet.models.layers.stacked_ntb`): logits ``(B, A)``
        and, with ``return_attention``, ``(A', A)`` each ``(A, B, heads, hw, hw)``. Same parameters and
        maths as the loop over :class:`LSCBranch` (equal up to float rounding)."""
        brs = list(self.branches)
        eps = self.eps()
        masks = None if eps is None else lsc_mask(self.mask_base.flatten(1), eps[:, None])  # Eq. 3, (A, hw)
        out = stacked_ntb(features, [b.ntb for b in brs], masks, return_attention)
        y, attn = out if return_attention else (out, None)  # y: (A, c, B*h*h)
        B, _, H, W = features.shape
        f = stacked_gdconv(y, [b.gdconv for b in brs], B, H, W).transpose(0, 1)  # GDConv, (A, B, c)
        return stacked_linear(f, [b.fc for b in brs]).squeeze(-1).transpose(0, 1), attn

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self._stacked(features):
            return self._stacked_branches(features)[0]
        return torch.cat([br(features, self.mask_base[j])[0] for j, br in enumerate(self.branches)], dim=1)

    def forward(self, images: torch.Tensor, return_attention: bool = False) -> ModelOutput:
        """Logits ``(B, A)``; with ``return_attention`` the aux has ``attention_pre`` (A'_i, Eq. 4) and
        ``attention`` (A_i, Eq. 5), each averaged over heads and queries: ``(B, A, h, h)`` (Fig. 4)."""
        if not return_attention:
            return super().forward(images)
        feats = self.forward_features(images)
        B, h = images.shape[0], self.map_size
        if self._stacked(feats):
            logits, (a0, a) = self._stacked_branches(feats, return_attention=True)
            aux = {"attention_pre": a0.mean(dim=(2, 3)).transpose(0, 1).reshape(B, -1, h, h),
                   "attention": a.mean(dim=(2, 3)).transpose(0, 1).reshape(B, -1, h, h)}
            return ModelOutput(logits, aux)
        logits, pre, post = [], [], []
        for j, br in enumerate(self.branches):
            logit, (a0, a) = br(feats, self.mask_base[j], return_attention=True)
            logits.append(logit)
            pre.append(a0.mean(dim=(1, 2)))
            post.append(a.mean(dim=(1, 2)))
        aux = {"attention_pre": torch.stack(pre, 1).reshape(B, -1, h, h),
               "attention": torch.stack(post, 1).reshape(B, -1, h, h)}
        return ModelOutput(torch.cat(logits, dim=1), aux)


class GDA(_ESCDANet):
    """Global dual-directional attention network (section 3.2) and its UA variant."""

    au_state_keys = {"fc.weight": 0, "fc.bias": 0}

    def __init__(
        self, aus: Sequence[int], *,
        directions: str = "hw", reduction: int = 32,
        width: float = 1.0, depths: Sequence[int] | None = None, out_channels: int | None = None,
        input_size: int = 112, crop_size: int = 176, in_chans: int = 3, mixconv_norm: bool = False,
        backbone_weights: str | None = None, allow_random_pretrained: bool = False,
        preprocess: dict | None = None, data: DataInfo | None = None,
    ):
        super().__init__(aus, width=width, depths=depths, out_channels=out_channels, input_size=input_size,
                         crop_size=crop_size, in_chans=in_chans, mixconv_norm=mixconv_norm,
                         backbone_weights=backbone_weights, allow_random_pretrained=allow_random_pretrained,
                         preprocess=preprocess, data=data)
        h = self.map_size
        self.attention = DirectionalAttention(self.channels, h, h, directions, reduction)
        self.gdconv = LinearBlock(self.channels, self.channels, h, groups=self.channels)
        self.fc = nn.Linear(self.channels, self.num_aus)
        self._init_weights()

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        y = features * self.attention(features)
        return self.fc(self.gdconv(y).flatten(1))


# ---------------------------------------------------------------------------------------------
# registered variants (Tables 5-6)
_INFO = dict(
    paper="Shao et al., Constrained and directional ensemble attention for facial action unit detection (ESCDA)",
    input_size=112, crop_size=176, recipe=RECIPE,
)
#: the smallest sensible configurations (registry metadata, used by the tests)
_SMALL = dict(width=0.125, depths=[1, 1, 1], input_size=64, crop_size=64)
_SMALL_LSC = dict(_SMALL, head_dim=16)
_SHARED = ("width", "depths", "out_channels", "input_size", "crop_size", "in_chans", "mixconv_norm",
           "backbone_weights", "allow_random_pretrained", "preprocess")


def _make_ensemble(default_combine: str):
    def make(aus: Sequence[int], *, lsc: dict | None = None, gda: dict | None = None,
             members: Sequence[dict] | None = None, combine: str = default_combine, eps: float = 1e-6,
             branch_impl: str | None = None, data: DataInfo | None = None, **shared) -> Ensemble:
        # branch_impl (LSC's evaluation of its AU branches, no parameter) goes to the LSC member(s)
        if branch_impl is not None:
            _check("branch_impl", branch_impl, BRANCH_IMPLS)
        if members is not None:  # a checkpoint of audet <= 0.x recorded each member's name and args
            top = {k: shared[k] for k in ("backbone_weights", "allow_random_pretrained") if shared.get(k) is not None}
            if lsc or gda or set(shared) - set(top):
                raise TypeError("escda: give either members=[...] (a recorded ensemble) or lsc/gda/shared arguments")
            if branch_impl is not None:
                members = [dict(s, args={**(s.get("args") or {}), "branch_impl": branch_impl})
                           if isinstance(s, dict) and s.get("model") in _LSC_NAMES else s for s in members]
            return ensemble(aus, members=members, combine=combine, eps=eps, data=data)
        unknown = set(shared) - set(_SHARED)
        if unknown:
            raise TypeError(f"escda: unknown argument(s) {sorted(unknown)}; member-specific ones go under "
                            f"lsc: {{...}} or gda: {{...}}; shared ones are {', '.join(_SHARED)}")
        lsc = {**(lsc or {}), **({"branch_impl": branch_impl} if branch_impl is not None else {})}
        built = [cls(aus, **{**shared, **(own or {}), "data": data}) for cls, own in ((LSC, lsc), (GDA, gda))]
        return Ensemble(built, combine, eps=eps, data=data)

    return make


_LSC_NAMES = ("escda_ls", "escda_lsc_fix", "escda_lsc")
_VARIANTS = {
    "escda_ls": ("LS", LSC, dict(constraint="none")),
    "escda_lsc_fix": ("LSC^(fix)", LSC, dict(constraint="fixed")),
    "escda_lsc": ("LSC", LSC, dict(constraint="adaptive")),
    "escda_ua": ("UA", GDA, dict(directions="h")),
    "escda_gda": ("GDA", GDA, dict(directions="hw")),
}
#: the faithful per-branch path of the LSC branches, timed against the default by benchmarks/model_speed.py
_REFERENCE = {"branch_impl": "loop"}
for _name, (_variant, _cls, _defaults) in _VARIANTS.items():
    _ref = {"reference_args": dict(_REFERENCE)} if _cls is LSC else {}
    register_model(variant_factory(_cls, _defaults), name=_name, variant=_variant, table="Tables 5-6",
                   defaults=dict(_defaults), small_config=dict(_SMALL_LSC if _cls is LSC else _SMALL), **_ref,
                   **_INFO)
for _name, _variant, _combine, _table in (("escda_v", "ESCDA-V", "vote", "Tables 5-6"),
                                          ("escda", "ESCDA", "mean", "Tables 1-3, 5-6")):
    register_model(_make_ensemble(_combine), name=_name, variant=_variant, table=_table,
                   defaults={"combine": _combine}, small_config=dict(_SMALL, lsc={"head_dim": 16}),
                   reference_args=dict(_REFERENCE), **_INFO)
