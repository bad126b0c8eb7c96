"""The model contract: the one interface every audet model follows (docs/adding-a-method.md).

A model maps images (``B x 3 x H x W``) or clips (``B x T x 3 x H x W``) to a
:class:`ModelOutput`: per-AU logits plus named auxiliary tensors its losses need. The training
engine never special-cases a method; everything method-specific is one of these hooks, each
declared here with a default:

construction
    ``create_model(name, aus=[...], data=DataInfo|None, **args)`` resolves the AU list once
    (:func:`audet.facs.default_aus` when neither ``aus`` nor ``data`` gives it), calls the factory
    ``fn(aus, data=..., **args)`` and records its bound arguments as ``model.config`` (what a
    checkpoint rebuilds the model from); :class:`AUModel` keeps ``data`` as ``self.data_info`` (:class:`DataInfo`: AU list,
    GLOBAL subject vocabulary, training subjects, label statistics, clip spec). A checkpoint
    records it, so a subject-dependent model is rebuilt without the training set.
outputs
    ``model(x)`` -> :class:`ModelOutput` (training path, with aux for the losses);
    ``forward_features(x)`` / ``forward_head(feats)`` / ``forward_logits(x)`` (logits only, no
    state mutation, traceable by ``torch.onnx.export``: evaluation, inference and export).
losses
    ``loss_context(data, labels, mask)`` -> :class:`LossContext` (once, from the training labels);
    ``loss_terms(output, batch, ctx)`` -> ``{name: scalar}`` (each already multiplied by its
    trade-off weight); the engine sums and logs them.
state across batches
    ``on_train_epoch_start(epoch)``, ``on_train_batch_end(output, batch)``,
    ``on_train_epoch_end(epoch)``; the epoch-end data pass ``wants_data_pass(epoch)`` /
    ``data_pass_step(batch)`` / ``data_pass_end(results)``; ``on_stage_start(stage)``,
    ``self.stage`` and ``batch_keys(stage)`` (what a ``labels_only`` stage serves). State lives in registered buffers so checkpoints and DDP carry it.
optimisation and transfer
    ``no_weight_decay()``, ``parameters_without_gradient()``, ``au_module_lists``, ``au_state_keys``, ``au_fresh_keys``,
    ``flop_count_context()``, ``pretrained_parts()`` (:class:`PretrainedPart`, loaded by
    :func:`load_pretrained_parts`), ``freeze(patterns)``.

``batch`` is the dict produced by :class:`audet.data.AUDataset` (keys ``image``, ``labels``,
``mask``, ``landmarks``, ``subcenters``, ``subject`` (a global index into
``DataInfo.subjects``), ``sequence``, ``frame``, ``index``, ...).
"""
from __future__ import annotations

import contextlib
import fnmatch
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from audet.clip import parse_clip
from audet.utils.io import to_jsonable

__all__ = [
    "ModelOutput",
    "LossContext",
    "DataInfo",
    "PretrainedPart",
    "PretrainedWeightsMissing",
    "AUModel",
    "LogitsOnly",
    "DEFAULT_PREPROCESS",
    "load_pretrained_parts",
    "pretrained_state_keys",
]

log = logging.getLogger(__name__)


@dataclass
class ModelOutput:
    """Per-AU logits (``B x A`` or ``B x T x A``) plus auxiliary outputs for the losses."""

    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


@dataclass
class LossContext:
    """Quantities computed once from the training labels and handed to ``loss_terms``.

    ``au_weight`` is w_j and ``pos_weight`` is v_j of AC2D Eq. 14 (see :mod:`audet.losses`).
    ``extra`` holds method-specific statistics (e.g. CISNet's adaptive loss weights, Eq. 6).
    """

    au_weight: torch.Tensor | None = None
    pos_weight: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device) -> "LossContext":
        """A copy on ``device`` (tensors in ``extra`` too, also inside lists, dicts and nested contexts)."""
        def mv(t):
            if isinstance(t, (torch.Tensor, LossContext)):
                return t.to(device)
            if isinstance(t, (list, tuple)):
                return type(t)(mv(v) for v in t)
            if isinstance(t, dict):
                return {k: mv(v) for k, v in t.items()}
            return t

        return LossContext(mv(self.au_weight), mv(self.pos_weight), mv(dict(self.extra)))


@dataclass
class DataInfo:
    """What the training data says, handed to a model factory (``create_model(..., data=)``).

    Attributes:
        aus: AU numbers in label-column order.
        subjects: the GLOBAL subject vocabulary: sorted ids of ALL subjects of the prepared dataset
            (every split). ``batch["subject"]`` is an int64 index into it, identical across the
            train/val/test splits.
        train_subjects: the subjects the model trains on (a subset of ``subjects``).
        label_stats: ``{"n_frames": int, "pos": [per-AU positives], "valid": [per-AU labelled
            frames], "train_frames_per_subject": {subject: n}}`` over the training frames.
        clip: the clip spec the data serves (None = single frames).
        dataset: the dataset name, e.g. ``"BP4D"``.

    JSON-able through :meth:`to_dict` / :meth:`from_dict`; every checkpoint stores it as
    ``"data_info"`` and :func:`audet.models.checkpoint.load_checkpoint` rebuilds the model with it.
    """

    aus: list[int]
    subjects: list[str] = field(default_factory=list)
    train_subjects: list[str] = field(default_factory=list)
    label_stats: dict = field(default_factory=dict)
    clip: dict | None = None
    dataset: str | None = None

    def __post_init__(self) -> None:
        self.aus = [int(a) for a in self.aus]
        self.subjects = [str(s) for s in self.subjects]
        self.train_subjects = [str(s) for s in self.train_subjects]
        unknown = sorted(set(self.train_subjects) - set(self.subjects))
        if unknown and self.subjects:
            raise ValueError(f"DataInfo: train_subjects {unknown[:5]} are not in the subject vocabulary")

    @property
    def num_aus(self) -> int:
        return len(self.aus)

    @property
    def num_subjects(self) -> int:
        return len(self.subjects)

    @property
    def num_train_subjects(self) -> int:
        return len(self.train_subjects)

    def subject_index(self, subject: str) -> int:
        """The global index of ``subject`` (what ``batch["subject"]`` holds)."""
        try:
            return self.subjects.index(str(subject))
        except ValueError:
            raise KeyError(f"subject {subject!r} is not in the data's subject vocabulary") from None

    def train_subject_indices(self) -> list[int]:
        """Global indices of the training subjects (in ``train_subjects`` order)."""
        pos = {s: i for i, s in enumerate(self.subjects)}
        return [pos[s] for s in self.train_subjects]

    def to_dict(self) -> dict:
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict | None) -> "DataInfo | None":
        if d is None:
            return None
        known = {"aus", "subjects", "train_subjects", "label_stats", "clip", "dataset"}
        return cls(**{k: v for k, v in dict(d).items() if k in known})


@dataclass
class PretrainedPart:
    """A sub-network whose weights come from a file (e.g. a frozen face-alignment network).

    Attributes:
        module: attribute path inside the model, e.g. ``"fan"``.
        description: what it is, e.g. ``"2-stack FAN face-alignment network (2DFAN-2)"``.
        source: where a user gets the file (docs text; a URL is allowed in the text).
        option: the model argument that points to the file, e.g. ``"fan_weights"`` (set it with
            ``model.args.<option>=PATH``).
        loader: ``loader(module, path)`` reads the file into the module (its format, expected names
            and shapes); None = a safetensors file of the module's ``state_dict`` loaded strictly.
        frozen: kept in eval mode, ``requires_grad=False``, not in the optimiser.
        store_in_checkpoint: whether the run's checkpoints carry its weights (when False,
            ``load_checkpoint`` re-reads the file through the recorded option).
        required: without the file the run refuses (unless ``allow_random_pretrained=True``).
    """

    module: str
    description: str
    source: str
    option: str
    loader: Callable[[nn.Module, str], None] | None = None
    frozen: bool = True
    store_in_checkpoint: bool = False
    required: bool = True


class PretrainedWeightsMissing(FileNotFoundError):
    """A required pretrained part has no file; the message says which, from where, which option."""


#: Preprocessing every model carries (like torchvision's Weights.transforms()).
DEFAULT_PREPROCESS = {
    "aligned_size": 200,  # protocol section 2
    "crop_size": 176,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "color": "RGB",
    "clip": None,  # e.g. {"offsets": [-10, 0, 10]} or {"length": 8} for temporal models
}


class AUModel(nn.Module):
    """Base class: holds the AU list, the preprocessing, the data info and every hook's default.

    ``AUModel(aus, preprocess=None, data=None)``: ``aus`` (AU numbers, in logit order) is the one
    AU list of the model; ``num_aus`` is derived from it. A model built through
    :func:`audet.models.create_model` gets ``aus`` resolved there (given, else the data's, else
    :func:`audet.facs.default_aus`) and its factory's bound arguments as :attr:`config`.
    """

    #: registry name, set by create_model
    model_name: str = ""
    #: names of ModuleLists with one entry per AU (keys ``name.<i>.*``), for AU-identity transfer
    au_module_lists: tuple[str, ...] = ()
    #: ``{fnmatch pattern: dim}`` of tensors with an AU dimension, e.g. ``{"fc.weight": 0}``
    au_state_keys: dict[str, int] = {}
    #: fnmatch patterns of tensors that are NOT carried over by AU-identity transfer but keep the
    #: model's fresh values (statistics of the training data: prototypes, a subject dictionary, a
    #: label VAE trained per dataset), e.g. ``("proto_*",)``; reported as ``reset``
    au_fresh_keys: tuple[str, ...] = ()
    #: the metadata of the checkpoint the model was loaded from (set by ``load_checkpoint``)
    checkpoint_meta: dict | None = None

    def __init__(self, aus: Sequence[int], preprocess: dict | None = None, data: DataInfo | None = None):
        super().__init__()
        if aus is None or isinstance(aus, (int, str)) or not len(aus):
            raise ValueError(f"{type(self).__name__} needs its AU numbers (aus=[1, 2, 4, ...]), got {aus!r}; "
                             "build it with audet.models.create_model, which fills them in")
        #: the AU numbers, in logit order (the one AU list of the model)
        self.aus: tuple[int, ...] = tuple(int(a) for a in aus)
        if len(set(self.aus)) != len(self.aus):
            raise ValueError(f"AU list {list(self.aus)} repeats an AU")
        self.preprocess = {**DEFAULT_PREPROCESS, **(preprocess or {})}
        parse_clip(self.preprocess.get("clip"))  # the model owns its clip: a bad spec fails here
        if data is not None and not isinstance(data, DataInfo):
            data = DataInfo.from_dict(data)
        #: what the training data said at construction (None when built without data)
        self.data_info: DataInfo | None = data
        #: the factory's bound arguments (set by create_model; recorded in checkpoints)
        self.config: dict[str, Any] = {}
        #: the current training stage ("" outside staged runs); set by :meth:`on_stage_start`
        self.stage: str = ""
        #: attribute paths of sub-modules kept in eval mode, and the patterns (see :meth:`freeze`)
        self._frozen_modules: tuple[str, ...] = ()
        self._frozen_patterns: tuple[str, ...] = ()
        #: {part name: "file PATH" | "random <description>"} after :func:`load_pretrained_parts`
        self.pretrained_status: dict[str, str] = {}

    @property
    def num_aus(self) -> int:
        """The number of AUs (``len(self.aus)``)."""
        return len(self.aus)

    # --- outputs --------------------------------------------------------------------------
    def forward_features(self, images: torch.Tensor):
        """Features before the classifier (a tensor or a tuple); override with :meth:`forward_head`."""
        raise NotImplementedError(f"{type(self).__name__} does not split forward_features/forward_head")

    def forward_head(self, features) -> torch.Tensor:
        """Per-AU logits from :meth:`forward_features`' output."""
        raise NotImplementedError(f"{type(self).__name__} does not split forward_features/forward_head")

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits only (``B x A`` or ``B x T x A``): no aux, no state mutation, ONNX-traceable.

        Default: ``forward_head(forward_features(x))`` when the model splits them, else
        ``forward(x).logits``. This is what evaluation, inference and export call.
        """
        if type(self).forward_features is not AUModel.forward_features:
            return self.forward_head(self.forward_features(images))
        return self(images).logits

    # --- losses ---------------------------------------------------------------------------
    def loss_context(self, data: DataInfo | None, labels: np.ndarray, mask: np.ndarray) -> LossContext:
        """Statistics of the training labels for :meth:`loss_terms`, computed once per run.

        ``labels`` ``(N, A)`` float 0/1 and ``mask`` ``(N, A)`` (1 = labelled) over the training
        frames. Default: w_j and v_j of AC2D Eq. 14 (:func:`audet.losses.au_weights`).
        """
        from audet.losses import au_weights

        labels = np.asarray(labels, dtype=np.float64)
        mask = np.asarray(mask, dtype=np.float64)
        if labels.ndim != 2 or labels.shape != mask.shape:
            raise ValueError(f"loss_context needs (N, A) labels and mask; got {labels.shape} and {mask.shape}")
        w, v = au_weights(labels, mask)
        return LossContext(au_weight=torch.as_tensor(w).float(), pos_weight=torch.as_tensor(v).float())

    def loss_terms(self, output: ModelOutput, batch: dict, ctx: LossContext) -> dict[str, torch.Tensor]:
        """Default: the weighted BCE of AC2D Eq. 14 (masked by missing labels)."""
        from audet.losses import weighted_bce

        return {"au": weighted_bce(output.logits, batch["labels"], batch["mask"], ctx.au_weight, ctx.pos_weight)}

    # --- cross-batch state ------------------------------------------------------------------
    def on_train_epoch_start(self, epoch: int) -> None:
        """Called by the engine before each training epoch."""

    def on_train_batch_end(self, output: ModelOutput, batch: dict) -> None:
        """Called after each training step with that step's output (no grad)."""

    def on_train_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch (after the data pass, before validation; no grad).
        Synchronise buffers across processes here."""

    def wants_data_pass(self, epoch: int) -> bool:
        """Whether the engine should run an epoch-end pass over the training data (default False).

        The engine then calls :meth:`data_pass_step` on every training batch IN ORDER (no grad,
        eval mode) after the epoch's last training batch (before validation), and
        :meth:`data_pass_end` with the list of the step results. A stage with
        ``collect_only: true`` runs only this pass (no training steps).
        """
        return False

    def data_pass_step(self, batch: dict) -> Any:
        """One batch of the epoch-end data pass (no grad, eval mode; the whole batch incl. "subject")."""
        return None

    def data_pass_end(self, results: list[Any]) -> None:
        """Aggregate the data pass (e.g. fill prototype or dictionary buffers)."""

    def on_stage_start(self, stage: str) -> None:
        """Called when a training stage starts (and when a run resumes inside it); sets ``self.stage``."""
        self.stage = str(stage)

    def batch_keys(self, stage: str) -> tuple[str, ...] | None:
        """The batch keys a training stage's :meth:`loss_terms` needs, or None (default): the full
        batch, images included.

        A stage configured ``labels_only: true`` is served batches of exactly these keys, built
        from the training labels without reading an image (``labels``, ``mask``, ``index`` are
        available); the engine then calls no forward: ``loss_terms`` gets a
        :class:`ModelOutput` with zero logits. Such a stage has no validation pass and keeps its
        last epoch. A model whose stage needs ``"image"`` cannot run it labels-only.
        """
        return None

    # --- optimisation and transfer ------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Parameter names (full or leaf) the optimiser must not decay (timm convention)."""
        return set()

    def parameters_without_gradient(self) -> Iterable[str]:
        """Names of parameters that took no part in the current training step's loss although
        a zero-valued term keeps them in the autograd graph (so DDP needs no
        ``find_unused_parameters``). Default: none.

        The engine sets their ``.grad`` to None before the optimiser step, so torch's optimisers
        skip them exactly as they skip a parameter outside the graph: no weight decay, no moment
        update, no step count (e.g. AC2D's intervention layers in an epoch without prototypes).
        """
        return ()

    def flop_count_context(self):
        """Context manager entered around the forward pass whose FLOPs are counted (default none)."""
        return contextlib.nullcontext()

    def pretrained_parts(self) -> dict[str, PretrainedPart]:
        """Sub-networks whose weights come from a file (default none); see :class:`PretrainedPart`."""
        return {}

    # --- frozen sub-modules -------------------------------------------------------------------
    def freeze(self, patterns: Iterable[str]) -> list[str]:
        """Freeze the parameters whose names match any fnmatch pattern (``"fan.*"``):
        ``requires_grad`` False, and every sub-module whose name matches (``fan`` for ``fan.*``) or
        all of whose parameters match is kept in eval mode by :meth:`train` (BatchNorm statistics
        stay put). Cumulative until :meth:`unfreeze`. Returns the frozen parameter names."""
        pats = [*getattr(self, "_frozen_patterns", ()), *(str(p) for p in patterns)]
        self._frozen_patterns = tuple(pats)

        def hit(name: str) -> bool:
            return any(fnmatch.fnmatchcase(name, pat) for pat in pats)

        names = []
        for name, p in self.named_parameters():
            if hit(name):
                p.requires_grad_(False)
                names.append(name)
        mods: list[str] = []
        for mname, mod in self.named_modules():
            if not mname or any(mname.startswith(m + ".") for m in mods):
                continue
            pnames = [f"{mname}.{n}" for n, _ in mod.named_parameters()]
            if hit(mname) or hit(mname + ".x") or (pnames and all(hit(n) for n in pnames)):
                mods.append(mname)
        self._frozen_modules = tuple(mods)
        self.train(self.training)
        return names

    def unfreeze(self) -> None:
        """Undo :meth:`freeze` (every parameter trainable; no module locked in eval)."""
        for p in self.parameters():
            p.requires_grad_(True)
        self._frozen_patterns = ()
        self._frozen_modules = ()
        self.train(self.training)

    @property
    def frozen_modules(self) -> tuple[str, ...]:
        return tuple(self._frozen_modules)

    def train(self, mode: bool = True):
        """``nn.Module.train`` that keeps frozen sub-modules (BatchNorm statistics!) in eval mode."""
        super().train(mode)
        for name in getattr(self, "_frozen_modules", ()):
            self.get_submodule(name).eval()
        return self


# ----------------------------------------------------------------------------------------------
# pretrained parts
# ----------------------------------------------------------------------------------------------
def _default_loader(module: nn.Module, path: str) -> None:
    from safetensors.torch import load_file

    state = load_file(path)
    module.load_state_dict(state, strict=True)


def pretrained_state_keys(model: nn.Module, stored_only: bool | None = None) -> dict[str, list[str]]:
    """``{part name: [state-dict keys of its module]}``; ``stored_only=False`` keeps only the parts
    NOT stored in checkpoints (their keys are left out of saved weights)."""
    parts = model.pretrained_parts() if isinstance(model, AUModel) else {}
    status = getattr(model, "pretrained_status", {}) or {}
    out = {}
    for name, part in parts.items():
        stored = part.store_in_checkpoint or str(status.get(name, "")).startswith("random")
        if stored_only is False and stored:
            continue
        if stored_only is True and not stored:
            continue
        prefix = part.module + "."
        out[name] = [k for k in model.state_dict() if k.startswith(prefix)]
    return out


def load_pretrained_parts(model: nn.Module, *, allow_random: bool | None = None,
                          paths: dict[str, str] | None = None,
                          from_checkpoint: dict[str, str] | None = None) -> dict[str, str]:
    """Load every :class:`PretrainedPart` of ``model`` from its file and freeze the frozen ones.

    The file of a part comes from ``paths[option]`` or the model argument ``model.config[option]``.
    Without a file, a ``required`` part raises :class:`PretrainedWeightsMissing` naming the part,
    where to get it and the option to set -- unless ``allow_random`` (default: the model argument
    ``allow_random_pretrained``) is true, in which case the part keeps its random init and is
    reported as ``"random <description>"`` (such weights are then always stored in checkpoints).
    Parts named in ``from_checkpoint`` (``{part: recorded status}``) get their weights elsewhere (a
    checkpoint that stores them): they are only frozen and keep the recorded status.
    Returns (and sets ``model.pretrained_status``) ``{part: "file PATH" | "random ..." | "absent"}``.
    """
    if not isinstance(model, AUModel):
        return {}
    parts = model.pretrained_parts()
    cfg = getattr(model, "config", {}) or {}
    if allow_random is None:
        allow_random = bool(cfg.get("allow_random_pretrained", False))
    status: dict[str, str] = {}
    skip = dict(from_checkpoint or {})
    for name, part in parts.items():
        if name in skip:
            status[name] = skip[name] or "checkpoint"
            if part.frozen:
                model.freeze([part.module + ".*"])
            continue
        try:
            module = model.get_submodule(part.module)
        except AttributeError:
            raise ValueError(f"{model.model_name or type(model).__name__}: pretrained part {name!r} names "
                             f"module {part.module!r}, which the model does not have") from None
        path = (paths or {}).get(part.option) or cfg.get(part.option)
        if path:
            p = Path(str(path)).expanduser()
            if not p.is_file():
                raise PretrainedWeightsMissing(
                    f"{part.description}: file {p} (model.args.{part.option}) not found; get it from {part.source}")
            (part.loader or _default_loader)(module, str(p))
            status[name] = f"file {p}"
        elif part.required and not allow_random:
            raise PretrainedWeightsMissing(
                f"{model.model_name or type(model).__name__} needs the {part.description} weights: set "
                f"model.args.{part.option}=PATH (get the file from {part.source}), or opt in to random "
                f"weights with model.args.allow_random_pretrained=true (labelled in every report)")
        elif part.required:
            status[name] = f"random {part.description}"
            log.warning("%s: running with RANDOM %s (allow_random_pretrained)", model.model_name, part.description)
        else:
            status[name] = "absent"
        if part.frozen:
            model.freeze([part.module + ".*"])
    model.pretrained_status = status
    return status


class LogitsOnly(nn.Module):
    """``model.forward_logits`` as a module's ``forward`` (what ``torch.onnx.export`` and
    ``torch.jit.trace`` take): the logits-only path of contract section 2, without the training
    extras of ``model(x)``."""

    def __init__(self, model: AUModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_logits(images)
