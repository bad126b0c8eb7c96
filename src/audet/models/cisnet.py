"""CISNet: causal intervention for subject-deconfounded AU recognition (Chen et al., ``papers/cisnet.md``).

Architecture (Fig. 3; layer shapes from the authors' ``net/CISNet.py``, protocol section 9)::

    image 3 x 256 x 256
      -> backbone: torchvision ResNet-18/34/50 without fc, pooled        (encoder.0 .. encoder.8)
      -> projector Linear(C, d_in)                               = f_cur  (d_in = 512)
      -> CIS: W_X f_cur + W_S r_cur  (Eq. 3-5, d_m = 256)                 [with CIS only]
      -> classifier Linear(d_out, 64) -> LeakyReLU(0.01) -> Linear(64, A) -> logits

(the authors end with a Sigmoid; audet models return logits, ``sigmoid`` gives their output).
The CIS module (:class:`~audet.models.layers.causal_subject.SubjectCausalIntervention`) holds the
subject dictionary (prototypes K, priors P = N_i/N, V = P * K) in buffers; it is filled by the
epoch-end data pass of the model contract (:meth:`CISNet.wants_data_pass`,
:meth:`CISNet.data_pass_step`, :meth:`CISNet.data_pass_end`), refreshed every epoch, and the
first epoch only fills it (a ``collect_only`` stage in the configs). ResNet-34 with CIS and 12
AUs has exactly 22,368,908 parameters (encoder 21,284,672; projector 262,656; CIS 787,968;
classifier 33,612), the published model (``original-checkpoints/cis_resnet34_12au.tsv``).

Registered names (Table 3: each backbone with and without CIS; ``_base`` = w/o CIS, i.e. the
same network with the projector feeding the classifier directly):

==================  ===========  ======  ======================================================
name                backbone     CIS     note
==================  ===========  ======  ======================================================
cisnet_r18          ResNet-18    yes     Table 3
cisnet_r18_base     ResNet-18    no      Table 3
cisnet_r34          ResNet-34    yes     the paper's CISNet (Tables 1-2), 22,368,908 params
cisnet_r34_base     ResNet-34    no      Table 3
cisnet_r50          ResNet-50    yes     Table 3 (projector 2048 -> 512)
cisnet_r50_base     ResNet-50    no      Table 3
cisnet_tiny         ResNet-tiny  yes     CIS plugged into the registered ``resnet_tiny`` trunk
cisnet_tiny_base    ResNet-tiny  no      its baseline (tests, synthetic runs)
==================  ===========  ======  ======================================================

A CIS model needs the subject ids of the data: ``create_model("cisnet_r34", aus=..., data=DataInfo)``
builds one dictionary row per TRAINING subject (``data.train_subjects``; all of
``data.subjects`` when no training subset is given) and maps the global ``batch["subject"]``
index to its row; without subjects it raises a ``ValueError``.

Options (paper default first; the published code's behaviour is opt-in, docs/models/cisnet.md):

- ``loss``: ``"paper"`` = Eq. 6 weighted by mu (the training occurrence rates from
  :meth:`loss_context`); ``"unweighted"`` = the published code's effective loss (it passes the
  weights under the wrong keyword, so they are never used); ``"code"`` = unweighted plus the
  code's other details (``log((p + 0.05)/1.05)`` smoothing, mean over AUs).
- ``dictionary``: ``"pass"`` = prototypes of the current parameters from the epoch-end data pass
  (eval mode, every training frame once); ``"train_steps"`` = the per-subject memory banks filled
  by the epoch's training forward passes (what the published code does; one epoch stale, train-mode
  BatchNorm, augmented frames). Both refresh every epoch; both fill an empty dictionary with a pass.
- ``eval_intervention``: True = evaluate with the dictionary (the training-time validation of
  the code and the paper); False = the published code's stand-alone test phase, which runs the
  model WITHOUT ``subject_infos`` (its ``meta_info epoch 0 < clf_only_epoch``).
- ``input_convention``: ``"rgb_norm"`` = audet's RGB, mean = std = 0.5 input; ``"bgr_unit"`` =
  the model's weights expect the authors' BGR / 255 input (converted checkpoints): the audet
  input is mapped to it inside :meth:`forward_features` (exact, so the data pipeline is unchanged).

Recipe (paper, implementation details): SGD momentum 0.9, weight decay 5e-4, lr 1e-3, batch 4,
15 epochs (the first only collects), early stopping; 256 x 256 input (``configs/cisnet_bp4d.yaml``).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Sequence

import torch
import torchvision
from torch import nn

from audet.models.base import AUModel, DataInfo, LossContext, ModelOutput, PretrainedPart
from audet.models.layers.causal_subject import SubjectCausalIntervention
from audet.models.registry import register_model, variant_factory

__all__ = ["CISNet", "BACKBONES", "LOSSES", "DICTIONARY_SOURCES", "INPUT_CONVENTIONS", "RECIPE", "subject_rows_from_data",
           "torchvision_encoder", "load_torchvision_resnet"]

log = logging.getLogger(__name__)

LOSSES = ("paper", "unweighted", "code")
DICTIONARY_SOURCES = ("pass", "train_steps")
INPUT_CONVENTIONS = ("rgb_norm", "bgr_unit")

#: the paper's recipe (section Implementation Details)
RECIPE = {
    "optimizer": "SGD", "momentum": 0.9, "weight_decay": 5e-4, "lr": 1e-3, "batch_size": 4, "epochs": 15,
    "collect_only_epochs": 1, "early_stopping": True, "input_size": 256,
    "source": "CISNet paper, Implementation Details",
}


def _check(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {', '.join(map(repr, choices))}")


def torchvision_encoder(arch: str) -> tuple[nn.Module, int]:
    """torchvision ``resnet18/34/50(weights=None)`` without ``fc``, as ``nn.Sequential`` of its
    children (the authors' ``encoder.0`` = conv1, ``.1`` = bn1, ``.4..7`` = layer1..4, ``.8`` =
    avgpool) plus a flatten; returns it and its output width (512 or 2048)."""
    net = getattr(torchvision.models, arch)(weights=None)
    width = net.fc.in_features
    return nn.Sequential(*list(net.children())[:-1], nn.Flatten(1)), width


#: backbone key -> (encoder builder, description)
BACKBONES: dict[str, tuple[Callable[..., tuple[nn.Module, int]], str]] = {
    "resnet18": (lambda **_: torchvision_encoder("resnet18"), "torchvision ResNet-18"),
    "resnet34": (lambda **_: torchvision_encoder("resnet34"), "torchvision ResNet-34"),
    "resnet50": (lambda **_: torchvision_encoder("resnet50"), "torchvision ResNet-50"),
}


def _tiny_encoder(width: int = 16, layers: Sequence[int] = (1, 1, 1, 1), **_) -> tuple[nn.Module, int]:
    from audet.models.baseline import TinyResNet

    trunk = TinyResNet(int(width), tuple(int(n) for n in layers))
    return trunk, trunk.out_features


BACKBONES["resnet_tiny"] = (_tiny_encoder, "audet resnet_tiny trunk (torchvision BasicBlocks)")

#: where the published code's encoder initialisation comes from (torchvision ImageNet weights)
IMAGENET_FILES = {
    "resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth", "resnet50": "resnet50-0676ba61.pth",
}


def load_torchvision_resnet(encoder: nn.Module, path: str) -> None:
    """Read a torchvision ResNet state_dict file (``.pth`` via ``torch.load(weights_only=True)`` or
    ``.safetensors``; names ``conv1``/``bn1``/``layerN``, ``fc`` ignored) into the encoder
    (``conv1 -> 0``, ``bn1 -> 1``, ``layerN -> N+3``, the authors' remapping). Strict."""
    import re

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path}: not readable with torch.load(weights_only=True): {exc}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.startswith("fc."):
            continue
        k = re.sub(r"^conv1\.", "0.", k)
        k = re.sub(r"^bn1\.", "1.", k)
        k = re.sub(r"^layer([1-4])\.", lambda m: f"{int(m.group(1)) + 3}.", k)
        out[k] = v
    missing, unexpected = encoder.load_state_dict(out, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: not a torchvision ResNet of this depth (missing {missing[:4]}, unexpected {unexpected[:4]})")


def subject_rows_from_data(data: DataInfo | dict | None, what: str = "CISNet") -> tuple[list[int], list[str]]:
    """``(rows, dictionary subjects)``: for every global subject of ``data.subjects`` its row in the
    subject dictionary (-1 if not a training subject), and the training subjects in row order.

    Raises a ``ValueError`` when ``data`` has no subject ids."""
    if isinstance(data, dict):
        data = DataInfo.from_dict(data)
    subjects = list(getattr(data, "subjects", None) or [])
    if not subjects:
        raise ValueError(
            f"{what} needs subject ids from the data (its CIS confounder dictionary has one prototype per "
            "training subject): build it with create_model(..., data=DataInfo(subjects=..., train_subjects=...)) "
            "from a prepared dataset whose frames carry subjects, or use the *_base variant (no CIS)"
        )
    train = list(getattr(data, "train_subjects", None) or []) or subjects
    unknown = sorted(set(train) - set(subjects))
    if unknown:
        raise ValueError(f"{what}: training subjects {unknown[:5]} are not in the data's subject vocabulary")
    train_set = set(train)
    ordered = [s for s in subjects if s in train_set]  # the global (sorted) order
    row = {s: i for i, s in enumerate(ordered)}
    return [row.get(s, -1) for s in subjects], ordered


class CISNet(AUModel):
    """CISNet and its Table 3 variants; see the module docstring for every option."""

    au_state_keys = {"classifier.2.weight": 0, "classifier.2.bias": 0}
    #: the subject dictionary is data, not weights: never carried over (a data pass refills it)
    au_fresh_keys = ("cis.subject_rows", "cis.dict_*")

    def __init__(
        self,
        aus: Sequence[int],
        *,
        data: DataInfo | dict | None = None,
        backbone: str = "resnet34",
        backbone_args: dict | None = None,
        cis: bool = True,
        d_in: int = 512,
        d_m: int = 256,
        hidden: int = 64,
        img_size: int = 256,
        loss: str = "paper",
        dictionary: str = "pass",
        eval_intervention: bool = True,
        input_convention: str = "rgb_norm",
        encoder_weights: str | None = None,
        preprocess: dict | None = None,
    ):
        if isinstance(data, dict):
            data = DataInfo.from_dict(data)
        pre = {"aligned_size": 200, "resize": int(img_size), "crop_size": int(img_size), **(preprocess or {})}
        super().__init__(aus, pre, data)
        _check("backbone", backbone, tuple(BACKBONES))
        _check("loss", loss, LOSSES)
        _check("dictionary", dictionary, DICTIONARY_SOURCES)
        _check("input_convention", input_convention, INPUT_CONVENTIONS)
        self.backbone = backbone
        self.loss = loss
        self.dictionary = dictionary
        self.eval_intervention = bool(eval_intervention)
        self.input_convention = input_convention
        self.img_size = int(img_size)

        self.encoder, width = BACKBONES[backbone][0](**(backbone_args or {}))
        self.projector = nn.Linear(width, d_in)
        if cis:
            rows, self.dictionary_subjects = subject_rows_from_data(data, "CISNet (with CIS)")
            self.cis: SubjectCausalIntervention | None = SubjectCausalIntervention(
                d_in, d_m, rows, num_rows=len(self.dictionary_subjects)
            )
        else:
            self.cis = None
            self.dictionary_subjects = []
        self.classifier = nn.Sequential(nn.Linear(d_in, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, self.num_aus))
        self._in_pass = False

    # ------------------------------------------------------------------------------------------
    # outputs
    @property
    def has_cis(self) -> bool:
        return self.cis is not None

    def _adapt_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_convention == "bgr_unit":
            # audet RGB, (v - mean)/std (the model's preprocess)  ->  the authors' BGR / 255 in [0, 1]
            mean = torch.as_tensor(self.preprocess["mean"], dtype=x.dtype, device=x.device).reshape(3, 1, 1)
            std = torch.as_tensor(self.preprocess["std"], dtype=x.dtype, device=x.device).reshape(3, 1, 1)
            x = x * std + mean
            # recompute the 8-bit levels as the authors do (v / 255): the data path's
            # (v * (1/255) - mean) / std round trip moves 63 of the 256 levels by up to 1.5e-8;
            # values within 1e-3 of a level (every undistorted uint8 pixel) snap to it exactly,
            # anything else (colour jitter) passes unchanged
            level = x * 255.0
            near = torch.round(level)
            x = torch.where((level - near).abs() < 1e-3, near / 255.0, x).flip(-3)
        return x

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """f_cur ``(..., d_in)``: projector(pooled backbone feature); clips run frame by frame."""
        lead = images.shape[:-3]
        x = self._adapt_input(images.reshape(-1, *images.shape[-3:]))
        f = self.projector(self.encoder(x))
        return f.reshape(*lead, f.shape[-1])

    def _use_cis(self, enabled: bool | None) -> bool | None:
        if self.cis is None:
            return None
        if enabled is None and not self.training and not self.eval_intervention:
            return False
        return enabled

    def forward_head(self, features: torch.Tensor, intervention: bool | None = None) -> torch.Tensor:
        """Logits from f_cur: ``classifier(W_X f + W_S r)`` (Eq. 3) or ``classifier(f)`` without CIS
        or while the dictionary is empty. ``intervention``: None = automatic, False = skip CIS (the
        authors' ``subject_infos=None`` path), True = require a filled dictionary."""
        lead = features.shape[:-1]
        f = features.reshape(-1, features.shape[-1])
        if self.cis is not None:
            f = self.cis(f, self._use_cis(intervention))
        return self.classifier(f).reshape(*lead, self.num_aus)

    def forward(self, images: torch.Tensor, *, intervention: bool | None = None) -> ModelOutput:
        """Logits ``(B, A)`` (``(B, T, A)`` for clips) and aux ``features`` = f_cur (before CIS)."""
        f = self.forward_features(images)
        return ModelOutput(self.forward_head(f, intervention), {"features": f})

    # ------------------------------------------------------------------------------------------
    # loss (Eq. 6)
    def loss_context(self, data, labels, mask) -> LossContext:
        """mu_i of Eq. 6: each AU's occurrence frequency in the training labels
        (:func:`audet.losses.cisnet_weights`), in ``ctx.extra["mu"]``."""
        import warnings

        import numpy as np

        from audet.losses import cisnet_weights

        labels = np.asarray(labels, dtype=np.float64)
        mask = np.asarray(mask, dtype=np.float64)
        if labels.ndim != 2 or labels.shape != mask.shape:
            raise ValueError(f"loss_context needs (N, A) labels and mask; got {labels.shape} and {mask.shape}")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            mu = cisnet_weights(labels, mask)
        return LossContext(extra={"mu": torch.as_tensor(mu).float()})

    def loss_terms(self, output: ModelOutput, batch: dict, ctx: LossContext) -> dict[str, torch.Tensor]:
        """``au``: the adaptive loss of Eq. 6 (``loss="paper"``), or the published code's variants."""
        from audet.losses import cisnet_adaptive_loss

        if self.loss == "paper":
            mu = (ctx.extra or {}).get("mu") if ctx is not None else None
            if mu is None:
                raise ValueError(
                    "CISNet loss='paper' needs mu (Eq. 6, the training AU occurrence rates) in ctx.extra['mu']: "
                    "build the context with model.loss_context(data, labels, mask)"
                )
            return {"au": cisnet_adaptive_loss(output.logits, batch["labels"], batch["mask"], mu)}
        if self.loss == "unweighted":
            return {"au": cisnet_adaptive_loss(output.logits, batch["labels"], batch["mask"], None)}
        return {"au": cisnet_adaptive_loss(output.logits, batch["labels"], batch["mask"], None,
                                           au_reduction="mean", smoothing=0.05)}

    # ------------------------------------------------------------------------------------------
    # subject dictionary: epoch-end data pass (contract section 4) and training-step memory banks
    def wants_data_pass(self, epoch: int) -> bool:
        """True for ``dictionary="pass"`` (every epoch) and whenever the dictionary is empty
        (the collect-only first epoch of the paper)."""
        if self.cis is None:
            return False
        return self.dictionary == "pass" or not self.cis.valid

    @torch.no_grad()
    def data_pass_step(self, batch: dict) -> int:
        """Add this batch's f_cur to its subjects' memory banks; returns the number of frames used.

        The sums live in the module (float64), so the list of results the engine keeps is small."""
        if self.cis is None:
            return 0
        if "subject" not in batch:
            raise ValueError("CISNet data pass: the batch has no 'subject' ids (the data must carry subjects)")
        if not self._in_pass:
            self.cis.reset_accumulator()
            self._in_pass = True
        f = self.forward_features(batch["image"])
        subject = torch.as_tensor(batch["subject"], device=f.device)
        if f.ndim == 3:  # clips: every frame belongs to the clip's subject
            subject = subject.reshape(-1, 1).expand(f.shape[0], f.shape[1])
        return self.cis.collect(f.reshape(-1, f.shape[-1]), subject.reshape(-1))

    @torch.no_grad()
    def data_pass_end(self, results: list[Any]) -> None:
        """K, P, V from the pass (Eq. 4); the dictionary is replaced (refreshed every epoch)."""
        if self.cis is None:
            return
        self._in_pass = False
        if not self.cis.finalize():
            log.warning("CISNet: the data pass saw no frame of a training subject; dictionary unchanged")

    def on_train_epoch_start(self, epoch: int) -> None:
        if self.cis is not None:
            self.cis.reset_accumulator()
            self._in_pass = False

    @torch.no_grad()
    def on_train_batch_end(self, output: ModelOutput, batch: dict) -> None:
        """``dictionary="train_steps"``: the published code's memory banks (training features)."""
        if self.cis is None or self.dictionary != "train_steps" or self._in_pass:
            return
        f = output.aux.get("features")
        if f is None or "subject" not in batch:
            return
        subject = torch.as_tensor(batch["subject"], device=f.device)
        if f.ndim == 3:
            subject = subject.reshape(-1, 1).expand(f.shape[0], f.shape[1])
        self.cis.collect(f.reshape(-1, f.shape[-1]), subject.reshape(-1))

    @torch.no_grad()
    def on_train_epoch_end(self, epoch: int) -> None:
        if self.cis is not None and self.dictionary == "train_steps" and not self._in_pass and self.cis.accumulated:
            self.cis.finalize()

    def pretrained_parts(self) -> dict[str, PretrainedPart]:
        """Optional ImageNet initialisation of a torchvision encoder (the published code starts
        from ImageNet ResNet weights; the paper does not say). Not required: without
        ``encoder_weights=PATH`` the encoder trains from scratch. Trainable, stored in checkpoints."""
        if self.backbone not in IMAGENET_FILES:
            return {}
        return {"encoder": PretrainedPart(
            module="encoder",
            description=f"ImageNet {self.backbone} weights (torchvision)",
            source=f"torchvision's {self.backbone} IMAGENET1K_V1 weights ({IMAGENET_FILES[self.backbone]}, "
                   "download.pytorch.org/models/)",
            option="encoder_weights",
            loader=load_torchvision_resnet,
            frozen=False,
            store_in_checkpoint=True,
            required=False,
        )}

    # ------------------------------------------------------------------------------------------
    # transfer and complexity
    @contextlib.contextmanager
    def flop_count_context(self):
        """Count FLOPs with the CIS path active (the authors' 9.58 GFLOPs include it): an empty
        dictionary is temporarily replaced by a uniform one and restored afterwards."""
        if self.cis is None or self.cis.valid:
            yield
            return
        names = ("dict_keys", "dict_values", "dict_priors", "dict_counts", "dict_present", "dict_valid")
        saved = {k: getattr(self.cis, k).clone() for k in names}
        try:
            n = self.cis.num_rows
            self.cis.set_dictionary(torch.zeros(n, self.cis.dim), torch.full((n,), 1.0 / n))
            yield
        finally:
            with torch.no_grad():
                for k, v in saved.items():
                    getattr(self.cis, k).copy_(v)


# ---------------------------------------------------------------------------------------------
# registered variants (Table 3)
_INFO = dict(
    paper="Chen et al., Causal intervention for subject-deconfounded facial action unit recognition (CISNet)",
    input_size=256,
    recipe=RECIPE,
)

_VARIANTS = {
    "cisnet_r18": ("resnet18", True, "ResNet18 w/ CIS", {}),
    "cisnet_r18_base": ("resnet18", False, "ResNet18 w/o CIS", {}),
    "cisnet_r34": ("resnet34", True, "ResNet34 w/ CIS (CISNet)", {"12": 22_368_908}),
    "cisnet_r34_base": ("resnet34", False, "ResNet34 w/o CIS", {}),
    "cisnet_r50": ("resnet50", True, "ResNet50 w/ CIS", {}),
    "cisnet_r50_base": ("resnet50", False, "ResNet50 w/o CIS", {}),
}


def _factory(backbone: str, cis: bool, extra: dict | None = None):
    return variant_factory(CISNet, {"backbone": backbone, "cis": cis, **(extra or {})})


for _name, (_bb, _cis, _variant, _params) in _VARIANTS.items():
    register_model(_factory(_bb, _cis), name=_name, variant=_variant, table="Table 3", needs_subjects=_cis,
                   params=_params, small_config={"img_size": 64}, **_INFO)

_TINY = dict(backbone_args={"width": 16, "layers": [1, 1, 1, 1]})
register_model(
    _factory("resnet_tiny", True, _TINY), name="cisnet_tiny", variant="CIS on the resnet_tiny trunk (plug-in claim)",
    needs_subjects=True, small_config={"backbone_args": {"width": 4}, "img_size": 64}, **_INFO,
)
register_model(
    _factory("resnet_tiny", False, _TINY), name="cisnet_tiny_base", variant="resnet_tiny trunk w/o CIS",
    needs_subjects=False, small_config={"backbone_args": {"width": 4}, "img_size": 64}, **_INFO,
)
