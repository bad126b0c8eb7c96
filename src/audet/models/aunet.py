"""AUNet: facial AU detection with face alignment (Yang et al., "Towards Robust Facial Action Units
Detection", ``shared/papers/aunet.md``) and its ablation variants (Table VI) plus ResNet18-A.

Architecture (section IV, Fig. 4)::

    frames I_{t-T}, I_t, I_{t+T} (256 x 256 RGB in [0, 1]; neighbours aligned to I_t by five points)
      -> frozen 2-stack FAN (layers/fan.py): basis F = cat(F_l, F_h1 * M, F_h2 * M), 768 x 64 x 64
      -> predictor (= the authors' AUFAN_TDN_, keys of aunet_tdn_12au.tsv):
           x = conv1x1(F_t)                                           256 x 64 x 64
           AU-TDN (section IV-C): d = conv1x1_diff(avgpool2(cat(F_t - F_{t-T}, F_t - F_{t+T})))  32 x 32
                                  x = alpha x + beta up(d)
           x = ConvNet_1(x) = ConvBlock + maxpool                     32 x 32
           AU-TDN: d = ConvNet_diff(d) = ConvBlock + maxpool (16 x 16); x = alpha x + beta up(d)
           x = ConvNet_2(x) = 3 x (ConvBlock + maxpool)               4 x 4
           global average pool -> classifier Linear(256, 128), BN1d, ReLU, Linear(128, A) -> logits
    AU-VAE (section IV-B, training only): a label VAE (A -> k -> A, k = 8/6/5 for BP4D/DISFA/
      Aff-Wild2) trained first on noisy labels (Eq. 2); its frozen encoder E then pulls
      E(sigmoid(prediction)) towards E(labels) (Eq. 3), L_total = L_cls (Eq. 1) + gamma L_cons (Eq. 4).

Registered variants (Table VI; ResNet18-A of Tables XIII-XIV):

==================  ========  =====  =====  =====================================================
name                paper     VAE    TDN    input
==================  ========  =====  =====  =====================================================
aunet_fan           AU-FAN    no     no     frames B x 3 x H x W
aunet_vae           AU-VAE    yes    no     frames
aunet_tdn           AU-TDN    no     yes    clips B x 3 x 3 x H x W, offsets [-T, 0, T]
aunet               AUNet     yes    yes    clips
aunet_resnet18a     ResNet18  yes    yes    clips; a trainable torchvision ResNet-18 replaces the
                    -A                      frozen FAN (TDN after layer1; our reading, see below)
==================  ========  =====  =====  =====================================================

Stages (contract section 7): a VAE variant is trained in two stages from one config,
``vae`` (only ``vae.*`` trains, loss Eq. 2; the image path is skipped in training steps) then
``detector`` (``vae.*`` and ``fan.*`` frozen, loss Eq. 1 + gamma Eq. 3). :meth:`on_stage_start`
switches the loss terms; outside a staged run a VAE variant trains the detector loss only if its
VAE is frozen (``vae_frozen=True``), else both losses at once.

Options, paper default first (published-code value for checkpoint parity / ``recipe=code``):

- ``fusion=(alpha, beta)``: static/motion fusion weights. Paper: "add the motion features with the
  static features", i.e. (1, 1); code: (0.9, 0.1).
- ``consistency``: ``"paper"`` = Eq. 3 with Sigma = exp(logvar); ``"code"`` =
  ``mse(mu_p, mu_g) + mean(std_p)`` (train_video_vae.py).
- ``vae_eval_sampling``: False (paper: the encoder's mean in eval); True = the published VAE
  samples z = mu + eps std even in eval mode (and returns std for logvar in eval).
- ``vae_reduction``: ``"mean"`` (default: Eq. 2 is a per-sample loss, averaged over the batch) or
  ``"sum"`` (the published ``train_vae.py`` sums it over the batch: the same minimum, gradients
  scaled by the batch size; with Adam that mostly changes the effective step early on).
- ``flip_tta``: average the logits of the frame(s) and their horizontal flip (the published test
  script does this); default False.
- ``fan_pool``: ``"max"`` (AU-Net's FAN, default) or ``"avg"`` (face-alignment package).
- ``crop_rule`` (preprocess, for raw detector boxes): ``"paper"`` / ``"code"``, see
  :func:`audet.geometry.aunet_crop_box`. The published F1 smoothing (+1 / +0.01) belongs to the
  metrics (``docs/models/aunet.md``).

The TDN difference sign: the paper's {F_t - F_{t-T}, F_t - F_{t+T}}; the code computes
``F_t - F_{t-T}`` and ``F_{t+T} - F_t``. With a following 1x1 conv both are the same model (the
converter negates the second half of ``conv1x1_diff.weight``).

Pretrained part: the FAN (``pretrained_parts()["fan"]``, option ``fan_weights``); its weights ship in
no package. Without them the run refuses (``PretrainedWeightsMissing``) unless
``allow_random_pretrained=True``, which trains on a random FAN, labelled as such everywhere.

ResNet18-A (not specified beyond "ResNet18 instantiated with AU-VAE and AU-TDN"): a torchvision
ResNet-18 trained from scratch; stem + layer1 per frame give F (64 x H/4 x W/4); TDN as above with
a torchvision BasicBlock on the differences, fused before layer2; layer2-4, average pool and the
same classifier (Linear(512, 128), BN1d, ReLU, Linear).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audet.models.base import AUModel, DataInfo, LossContext, ModelOutput, PretrainedPart
from audet.models.layers.fan import FAN, POOL_MODES, ConvBlock, load_fan_weights
from audet.models.registry import register_model, variant_factory

__all__ = [
    "LabelVAE",
    "AUNetPredictor",
    "AUNet",
    "ResNet18A",
    "vae_latent_dim",
    "CONSISTENCY_MODES",
    "FAN_SOURCE",
    "RECIPES",
]

CONSISTENCY_MODES = ("paper", "code")
#: how the label VAE's loss (Eq. 2) is reduced over the batch: mean (paper reading) or sum (train_vae.py)
VAE_REDUCTIONS = ("mean", "sum")
STAGES = ("vae", "detector")

#: where a user gets the FAN weights (docs/models/aunet.md has the details)
FAN_SOURCE = (
    "AU-Net's models/2dfan2.pth (github.com/jingyang2017/AU-Net, Git LFS / the authors' release; "
    "pool=max) or a face-alignment 2DFAN-2 checkpoint (github.com/1adrianb/face-alignment model zoo; "
    "use fan_pool=avg), or train one here without a download: audet pretrain-fan --data PREPARED "
    "--out FILE; see docs/models/aunet.md"
)

#: training recipes (section V-C vs the published code); the configs implement them
RECIPES = {
    "paper": {
        "vae": {"optimizer": "Adam", "lr": 1e-3, "weight_decay": 0.0, "epochs": 100},
        "detector": {"optimizer": "AdamW", "lr": 1e-4, "schedule": "x0.7 every 4 epochs", "epochs": 12,
                     "batch_size": 64},
        "fusion": (1.0, 1.0), "consistency": "paper", "vae_eval_sampling": False,
        "source": "AUNet paper, section V-C",
    },
    "code": {
        "fusion": (0.9, 0.1), "consistency": "code", "vae_eval_sampling": True, "vae_reduction": "sum",
        "flip_tta": True, "f1_convention": "aunet",
        "source": "published code (original-checkpoints/aunet_tdn_12au.tsv, aunet_vae_bp4d.tsv)",
    },
}

_DATASET_LATENT = {"BP4D": 8, "BP4D+": 8, "BP4DPLUS": 8, "DISFA": 6, "AFFWILD2": 5, "AFF-WILD2": 5}


def vae_latent_dim(num_aus: int, dataset: str | None = None) -> int:
    """Latent size k of the label VAE (section V-C: 8 for BP4D, 6 for DISFA, 5 for Aff-Wild2).

    By dataset name when known, else ``floor((2 A + 2) / 3)``, which gives the same 8 / 6 / 5 for
    12 / 8 / 7 AUs."""
    if dataset and dataset.upper() in _DATASET_LATENT:
        return _DATASET_LATENT[dataset.upper()]
    return max(2, (2 * int(num_aus) + 2) // 3)


def _check(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {', '.join(map(repr, choices))}")


# ---------------------------------------------------------------------------------------------
# the label VAE (section IV-B)
class LabelVAE(nn.Module):
    """AU-Net's label VAE (names of aunet_vae_bp4d.tsv): ``h = relu(fc1(y))``, ``mu = fc21(h)``,
    ``logvar = fc22(h)``, ``z = mu + eps exp(logvar / 2)``, ``recon = fc4(relu(fc3(z)))`` (logits)."""

    def __init__(self, num_aus: int, latent: int):
        super().__init__()
        self.fc1 = nn.Linear(num_aus, latent)
        self.fc21 = nn.Linear(latent, latent)
        self.fc22 = nn.Linear(latent, latent)
        self.fc3 = nn.Linear(latent, latent)
        self.fc4 = nn.Linear(latent, num_aus)

    def encode(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(y))
        return self.fc21(h), self.fc22(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc4(F.relu(self.fc3(z)))

    def forward(self, y: torch.Tensor, sample: bool | None = None, eps: torch.Tensor | None = None):
        """``(recon_logits, mu, logvar)``. ``sample`` (default: ``self.training``) draws
        z = mu + eps std (``eps`` given or ``randn``); otherwise z = mu."""
        mu, logvar = self.encode(y)
        if sample is None:
            sample = self.training
        if sample:
            std = torch.exp(0.5 * logvar)
            z = mu + (torch.randn_like(std) if eps is None else eps) * std
        else:
            z = mu
        return self.decode(z), mu, logvar


# ---------------------------------------------------------------------------------------------
# the trainable predictor (AU-FAN head + AU-TDN), names of aunet_tdn_12au.tsv
class AUNetPredictor(nn.Module):
    """The authors' ``AUFAN_TDN_`` (``temporal=True``) or its AU-FAN part (``temporal=False``);
    see the module docstring. Registration order = the authors' state-dict order."""

    def __init__(self, num_aus: int, in_channels: int = 768, width: int = 256, hidden: int = 128,
                 temporal: bool = True, fusion: Sequence[float] = (1.0, 1.0)):
        super().__init__()
        self.temporal = bool(temporal)
        self.alpha, self.beta = (float(f) for f in fusion)
        self.conv1x1 = nn.Conv2d(in_channels, width, kernel_size=1)
        self.ConvNet_1 = nn.Sequential(ConvBlock(width, width), nn.MaxPool2d(2))
        if self.temporal:
            self.ConvNet_diff = nn.Sequential(ConvBlock(width, width), nn.MaxPool2d(2))
        self.ConvNet_2 = nn.Sequential(
            ConvBlock(width, width), nn.MaxPool2d(2), ConvBlock(width, width), nn.MaxPool2d(2),
            ConvBlock(width, width), nn.MaxPool2d(2),
        )
        self.predictor = nn.Sequential(nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                       nn.Linear(hidden, num_aus))
        if self.temporal:
            self.conv1x1_diff = nn.Conv2d(2 * in_channels, width, kernel_size=1)

    def _fuse(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.alpha * x + self.beta * F.interpolate(d, size=x.shape[-2:], mode="nearest")

    def forward_features(self, cur: torch.Tensor, former: torch.Tensor | None = None,
                         later: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled feature ``(B, width)`` from the basis of frame t (and t-T, t+T for the TDN)."""
        x = self.conv1x1(cur)
        if self.temporal:
            former = cur if former is None else former
            later = cur if later is None else later
            # AU-TDN step (1): average-pool the differences F_t - F_{t-T}, F_t - F_{t+T}; (2) 1x1 conv
            d = self.conv1x1_diff(F.avg_pool2d(torch.cat((cur - former, cur - later), dim=1), 2))
            x = self._fuse(x, d)  # (3) add motion to static features
        x = self.ConvNet_1(x)
        if self.temporal:
            d = self.ConvNet_diff(d)  # (2) Convblock on the motion features
            x = self._fuse(x, d)
        x = self.ConvNet_2(x)
        # the authors' avg_pool2d (kernel 4 at 256 px): bitwise their value; mean() differs by ~1e-5
        return F.avg_pool2d(x, (int(x.shape[-2]), int(x.shape[-1]))).flatten(1)  # a constant kernel (ONNX)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.predictor(feats)

    def forward(self, cur, former=None, later=None) -> torch.Tensor:
        return self.forward_head(self.forward_features(cur, former, later))


# ---------------------------------------------------------------------------------------------
# the shared model logic (VAE, losses, stages, clips, flip TTA)
class _AUNetBase(AUModel):
    """Losses (Eq. 1-4), stages, clip handling and flip TTA shared by AUNet and ResNet18-A."""

    #: the label VAE is trained on each dataset's own labels (section IV-B): never carried over by
    #: AU-identity transfer (DISFA from BP4D, section V-A)
    au_fresh_keys = ("vae.*",)

    def __init__(self, aus, data, *, img_size: int, crop_rule: str, preprocess: dict | None,
                 fusion: Sequence[float], hidden: int, temporal: bool, use_vae: bool, frame_offset: int,
                 vae_latent: int | None, vae_lambda: float, vae_noise: float, gamma: float, consistency: str,
                 vae_eval_sampling: bool, vae_frozen: bool, flip_tta: bool, vae_reduction: str = "mean"):
        """The options both networks share; sets ``self.fusion`` (alpha, beta)."""
        fusion = tuple(float(f) for f in fusion)
        if len(fusion) != 2:
            raise ValueError(f"fusion must be (alpha, beta), got {fusion}")
        _check("consistency", consistency, CONSISTENCY_MODES)
        _check("vae_reduction", vae_reduction, VAE_REDUCTIONS)
        preprocess = _preprocess(img_size, crop_rule, preprocess)
        if temporal:
            T = int(frame_offset)
            if T < 1:
                raise ValueError(f"frame_offset must be >= 1 (frames t-T, t, t+T), got {frame_offset}")
            preprocess = {**preprocess, "clip": {"offsets": [-T, 0, T], "targets": "centre"},
                          "align_clip": "five_point"}
        super().__init__(aus, preprocess, data)
        self.temporal = bool(temporal)
        self.use_vae = bool(use_vae)
        self.vae_lambda = float(vae_lambda)
        self.vae_noise = float(vae_noise)
        self.gamma = float(gamma)
        self.consistency = consistency
        self.vae_eval_sampling = bool(vae_eval_sampling)
        self.flip_tta = bool(flip_tta)
        self.vae_reduction = vae_reduction
        self.vae = None
        if self.use_vae:
            k = int(vae_latent) if vae_latent else vae_latent_dim(self.num_aus, data.dataset if data else None)
            self.vae_latent = k
            self.vae = LabelVAE(self.num_aus, k)
            if vae_frozen:
                self.freeze(["vae.*"])
        self.fusion = fusion

    # --- inputs -------------------------------------------------------------------------------
    def _frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(current, former, later) from ``B x 3 x H x W`` or a clip ``B x 3 x 3 x H x W`` in the
        order of the clip offsets [-T, 0, T]. A temporal model given frames repeats frame t (as the
        published code does for a missing neighbour)."""
        if x.dim() == 5:
            if x.shape[1] != 3:
                raise ValueError(f"expected clips of 3 frames (t-T, t, t+T), got {tuple(x.shape)}")
            if not self.temporal:
                return x[:, 1], None, None
            return x[:, 1], x[:, 0], x[:, 2]
        if x.dim() != 4:
            raise ValueError(f"expected B x 3 x H x W frames or B x 3 x 3 x H x W clips, got {tuple(x.shape)}")
        return x, None, None

    # --- outputs --------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        cur, former, later = self._frames(x)
        return self._features(cur, former, later)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self._head(feats)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``B x A`` of frame t; with ``flip_tta`` the mean of the logits of the input and
        its horizontal flip (all frames flipped). During the ``vae`` stage the detector is not
        trained yet: its validation is skipped (zeros, no FAN pass; such scores mean nothing)."""
        if self.stage == "vae":
            return x.new_zeros(x.shape[0], self.num_aus)
        logits = self.forward_head(self.forward_features(x))
        if self.flip_tta:
            logits = 0.5 * (logits + self.forward_head(self.forward_features(torch.flip(x, dims=(-1,)))))
        return logits

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Training path. In the ``vae`` stage (training mode) the image path is skipped: the
        logits are zeros and only the label VAE learns (Eq. 2, from the batch labels)."""
        if self.training and self.stage == "vae":
            return ModelOutput(x.new_zeros(x.shape[0], self.num_aus), {})
        feats = self.forward_features(x)
        return ModelOutput(self.forward_head(feats), {"features": feats})

    # --- stages -----------------------------------------------------------------------------------
    def on_stage_start(self, stage: str) -> None:
        """``vae``: only the VAE loss (Eq. 2); ``detector`` (or any other name): Eq. 1 + gamma Eq. 3
        with the VAE frozen. A non-VAE variant has no ``vae`` stage."""
        super().on_stage_start(stage)
        if stage == "vae" and not self.use_vae:
            raise ValueError(f"{self.model_name or type(self).__name__} has no label VAE; drop the 'vae' stage")
        if self.use_vae and stage and stage != "vae":
            self.freeze(["vae.*"])

    def batch_keys(self, stage: str) -> tuple[str, ...] | None:
        """The ``vae`` stage (Eq. 2) needs the labels only: run it ``labels_only: true`` and no frame
        is decoded; the other stages need the full batch (None)."""
        return ("labels", "mask") if stage == "vae" else None

    def _vae_frozen(self) -> bool:
        return self.vae is not None and all(not p.requires_grad for p in self.vae.parameters())

    # --- losses -----------------------------------------------------------------------------------
    def loss_context(self, data: DataInfo | None, labels: np.ndarray, mask: np.ndarray) -> LossContext:
        """Eq. 1 weights ``w_i = (1/r_i) / sum_k (1/r_k)`` (:func:`audet.losses.aunet_weights`)."""
        import warnings

        from audet.losses import aunet_weights

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            w = aunet_weights(np.asarray(labels, dtype=np.float64), np.asarray(mask, dtype=np.float64))
        return LossContext(au_weight=torch.as_tensor(w).float())

    def vae_terms(self, labels: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Eq. 2 on a batch of labels: the encoder sees y~ = y + U(-noise, noise), the decoder
        reconstructs the clean y."""
        from audet.losses import aunet_vae_loss

        y = labels.float()
        if mask is not None:
            y = y * (mask > 0)
        noisy = y + (torch.rand_like(y) * 2 - 1) * self.vae_noise
        recon, mu, logvar = self.vae(noisy, sample=True)
        t = aunet_vae_loss(recon, labels, mu, logvar, self.vae_lambda, mask, reduction=self.vae_reduction)
        return {"vae_bce": t["bce"], "vae_kl": t["kl"]}

    def consistency_term(self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """gamma * Eq. 3 through the (frozen) encoder E: E(sigmoid(logits)) vs E(labels). Frames with
        an unknown label are left out (E needs a complete label vector)."""
        from audet.losses import aunet_consistency_loss, aunet_consistency_loss_code

        y = labels.float()
        full = torch.ones(y.shape[0], device=y.device) if mask is None else (mask > 0).all(dim=1).float()
        mu_p, logvar_p = self.vae.encode(torch.sigmoid(logits.float()))
        with torch.no_grad():
            mu_g, logvar_g = self.vae.encode(y)
        if self.consistency == "paper":
            loss = aunet_consistency_loss(mu_p, logvar_p, mu_g, logvar_g, full)
        else:
            loss = aunet_consistency_loss_code(mu_p, torch.exp(0.5 * logvar_p), mu_g, full)
        return self.gamma * loss

    def loss_terms(self, output: ModelOutput, batch: dict, ctx: LossContext) -> dict[str, torch.Tensor]:
        """``vae`` stage: Eq. 2 (``vae_bce``, ``vae_kl``). Otherwise ``au`` (Eq. 1, weighted BCE) and,
        for VAE variants, ``consistency`` (gamma Eq. 3; Eq. 4 is their sum). A VAE variant run
        without stages and with a trainable VAE also learns Eq. 2 at the same time."""
        from audet.losses import aunet_weighted_bce

        labels, mask = batch["labels"], batch.get("mask")
        if labels.dim() == 3:  # clip targets "all": frame t only
            labels, mask = labels[:, labels.shape[1] // 2], None if mask is None else mask[:, mask.shape[1] // 2]
        if self.stage == "vae":
            return self.vae_terms(labels, mask)
        terms = {"au": aunet_weighted_bce(output.logits, labels, mask, ctx.au_weight)}
        if self.use_vae:
            if not self._vae_frozen():
                terms.update(self.vae_terms(labels, mask))
            terms["consistency"] = self.consistency_term(output.logits, labels, mask)
        return terms

    def vae_forward_eval(self, y: torch.Tensor, eps: torch.Tensor | None = None):
        """The VAE in eval mode, ``(recon, mu, third)``: paper (default) z = mu and ``third`` =
        logvar; ``vae_eval_sampling=True`` as the published code: z = mu + eps std and ``third`` = std."""
        if not self.vae_eval_sampling:
            return self.vae(y, sample=False)
        recon, mu, logvar = self.vae(y, sample=True, eps=eps)
        return recon, mu, torch.exp(0.5 * logvar)

    # to implement in subclasses
    def _features(self, cur, former, later) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _head(self, feats) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _preprocess(img_size: int, crop_rule: str, extra: dict | None) -> dict:
    from audet.geometry import AUNET_CROP_RULES

    _check("crop_rule", crop_rule, AUNET_CROP_RULES)
    shift = int(round(10 * img_size / 256))  # section V-C: centre shift +-10 px at 256
    return {"aligned_size": 200, "resize": int(img_size) + 2 * shift, "crop_size": int(img_size),
            "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "color": "RGB", "crop_rule": crop_rule,
            # section V-C lists flips, rotation, shift, scaling, blur, compression and dropout, no
            # colour jitter: the training transform's default brightness/contrast jitter is off.
            # (With it, dark jittered frames drove a pretrained FAN's basis to 30x its usual size,
            # the predictor's BatchNorm statistics followed, and in eval the logits no longer
            # varied across images: issue 17, docs/models/aunet.md "Learnability".)
            "augment": {"brightness": 0.0, "contrast": 0.0},
            **(extra or {})}


class AUNet(_AUNetBase):
    """AU-FAN / AU-VAE / AU-TDN / AUNet on the frozen FAN (see the module docstring)."""

    #: the classifier's AU rows (AU-identity transfer)
    au_state_keys = {"predictor.predictor.3.weight": 0, "predictor.predictor.3.bias": 0}

    def __init__(
        self,
        aus: Sequence[int],
        *,
        data: DataInfo | None = None,
        temporal: bool = True,
        use_vae: bool = True,
        fan_weights: str | None = None,
        fan_pool: str = "max",
        allow_random_pretrained: bool = False,
        img_size: int = 256,
        frame_offset: int = 10,
        width: int = 256,
        hidden: int = 128,
        fusion: Sequence[float] = (1.0, 1.0),
        vae_latent: int | None = None,
        vae_lambda: float = 0.1,
        vae_noise: float = 0.2,
        gamma: float = 1.0,
        consistency: str = "paper",
        vae_eval_sampling: bool = False,
        vae_frozen: bool = False,
        flip_tta: bool = False,
        crop_rule: str = "paper",
        preprocess: dict | None = None,
        vae_reduction: str = "mean",
    ):
        _check("fan_pool", fan_pool, POOL_MODES)
        if img_size % 64:
            raise ValueError(f"img_size must be a multiple of 64 (FAN /4, then 4 poolings), got {img_size}")
        super().__init__(
            aus, data, img_size=img_size, crop_rule=crop_rule, preprocess=preprocess, fusion=fusion,
            hidden=hidden, temporal=temporal, use_vae=use_vae, frame_offset=frame_offset, vae_latent=vae_latent,
            vae_lambda=vae_lambda, vae_noise=vae_noise, gamma=gamma, consistency=consistency,
            vae_eval_sampling=vae_eval_sampling, vae_frozen=vae_frozen, flip_tta=flip_tta,
            vae_reduction=vae_reduction,
        )
        # registration order: fan, vae, predictor (the authors' AU_NET: feature.fan, predictor)
        self.fan = FAN(2, pool=fan_pool)
        self.freeze(["fan.*"])  # frozen always (section IV-A); load_pretrained_parts loads it
        if self.vae is not None:  # keep 'vae' after 'fan' in the state dict
            self.vae = self._modules.pop("vae")
            self._modules["vae"] = self.vae
        self.predictor = AUNetPredictor(self.num_aus, 768, width, hidden, temporal, self.fusion)
        if allow_random_pretrained and not fan_weights:
            # labelled from construction on, so a checkpoint saved before load_pretrained_parts
            # also stores (and names) the random FAN
            self.pretrained_status = {"fan": f"random {self.pretrained_parts()['fan'].description}"}

    def pretrained_parts(self) -> dict[str, PretrainedPart]:
        return {"fan": PretrainedPart(
            module="fan",
            description=f"2-stack FAN face-alignment network (2DFAN-2, {self.fan.pool}-pool)",
            source=FAN_SOURCE, option="fan_weights", loader=load_fan_weights,
            frozen=True, store_in_checkpoint=False, required=True,
        )}

    def basis(self, frames: torch.Tensor) -> torch.Tensor:
        """AU-Net's 768-channel basis of ``(N, 3, H, W)`` frames (frozen FAN, section IV-A)."""
        return self.fan.forward_features(frames)

    def _features(self, cur, former, later) -> torch.Tensor:
        if former is None:
            return self.predictor.forward_features(self.basis(cur))
        B = cur.shape[0]
        f = self.basis(torch.cat((cur, former, later), dim=0))  # one FAN pass for the 3 frames
        return self.predictor.forward_features(f[:B], f[B:2 * B], f[2 * B:])

    def _head(self, feats) -> torch.Tensor:
        return self.predictor.forward_head(feats)


class ResNet18A(_AUNetBase):
    """ResNet18-A (Tables XIII-XIV): ResNet-18 with AU-VAE and AU-TDN (module docstring)."""

    #: the classifier's AU rows (AU-identity transfer)
    au_state_keys = {"classifier.3.weight": 0, "classifier.3.bias": 0}

    def __init__(
        self,
        aus: Sequence[int],
        *,
        data: DataInfo | None = None,
        temporal: bool = True,
        use_vae: bool = True,
        img_size: int = 256,
        frame_offset: int = 10,
        hidden: int = 128,
        fusion: Sequence[float] = (1.0, 1.0),
        vae_latent: int | None = None,
        vae_lambda: float = 0.1,
        vae_noise: float = 0.2,
        gamma: float = 1.0,
        consistency: str = "paper",
        vae_eval_sampling: bool = False,
        vae_frozen: bool = False,
        flip_tta: bool = False,
        crop_rule: str = "paper",
        preprocess: dict | None = None,
        vae_reduction: str = "mean",
    ):
        from torchvision.models import resnet18
        from torchvision.models.resnet import BasicBlock

        if img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32 for ResNet-18, got {img_size}")
        super().__init__(
            aus, data, img_size=img_size, crop_rule=crop_rule, preprocess=preprocess, fusion=fusion,
            hidden=hidden, temporal=temporal, use_vae=use_vae, frame_offset=frame_offset, vae_latent=vae_latent,
            vae_lambda=vae_lambda, vae_noise=vae_noise, gamma=gamma, consistency=consistency,
            vae_eval_sampling=vae_eval_sampling, vae_frozen=vae_frozen, flip_tta=flip_tta,
            vae_reduction=vae_reduction,
        )
        self.alpha, self.beta = self.fusion
        r = resnet18(weights=None)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)  # F: 64 x H/4 x W/4
        if self.temporal:
            self.diff_conv = nn.Conv2d(128, 64, kernel_size=1)
            self.diff_block = BasicBlock(64, 64)
        self.layers = nn.Sequential(r.layer2, r.layer3, r.layer4)
        self.classifier = nn.Sequential(nn.Linear(512, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                        nn.Linear(hidden, self.num_aus))

    def _features(self, cur, former, later) -> torch.Tensor:
        if former is None or not self.temporal:
            x = self.stem(cur)
        else:
            B = cur.shape[0]
            f = self.stem(torch.cat((cur, former, later), dim=0))
            ft, fp, fn = f[:B], f[B:2 * B], f[2 * B:]
            d = self.diff_block(self.diff_conv(F.avg_pool2d(torch.cat((ft - fp, ft - fn), dim=1), 2)))
            x = self.alpha * ft + self.beta * F.interpolate(d, size=ft.shape[-2:], mode="nearest")
        x = self.layers(x)
        return F.avg_pool2d(x, (int(x.shape[-2]), int(x.shape[-1]))).flatten(1)  # a constant kernel (ONNX)

    def _head(self, feats) -> torch.Tensor:
        return self.classifier(feats)


# ---------------------------------------------------------------------------------------------
# registered variants (Table VI, Tables XIII-XIV)
_INFO = dict(
    paper="Yang et al., Towards Robust Facial Action Units Detection (AUNet)",
    input_size=256,
    recipe=RECIPES,
    stages=list(STAGES),
)

_VARIANTS = {
    "aunet_fan": ("AU-FAN", dict(temporal=False, use_vae=False),
                  {"trainable_params": 1_857_164, "frozen_params": 12_106_504}),
    "aunet_vae": ("AU-VAE", dict(temporal=False, use_vae=True), {"frozen_params": 12_106_504}),
    "aunet_tdn": ("AU-TDN", dict(temporal=True, use_vae=False),
                  {"trainable_params": 2_657_036, "frozen_params": 12_106_504}),
    "aunet": ("AUNet", dict(temporal=True, use_vae=True),
              {"paper_trainable": "2.66M / 3.84G", "paper_frozen_fan": "12.11M / 13.97G"}),
}


for _name, (_variant, _defaults, _counts) in _VARIANTS.items():
    register_model(variant_factory(AUNet, _defaults), name=_name, variant=_variant, table="Table VI",
                   defaults=dict(_defaults), counts=_counts,
                   small_config={"img_size": 64, "allow_random_pretrained": True,
                                 **({"vae_latent": 8} if _defaults["use_vae"] else {})}, **_INFO)
register_model(variant_factory(ResNet18A, {}), name="aunet_resnet18a", variant="ResNet18-A", table="Tables XIII-XIV",
               defaults={"temporal": True, "use_vae": True}, small_config={"img_size": 64, "vae_latent": 8}, **_INFO)
