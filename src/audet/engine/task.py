"""``AUTask``: the one LightningModule that trains and evaluates every registered model.

The task never special-cases a method. It

- builds ``create_model(config.model.name, aus=..., **config.model.args)``;
- computes the :class:`~audet.models.LossContext` once from the training labels
  (:func:`audet.losses.au_weights`; w_j and v_j of AC2D Eq. 14) when fitting starts;
- sums ``model.loss_terms(output, batch, ctx)`` in ``training_step`` and logs each term
  (``train/<term>``) and the total (``train/loss``);
- calls the model's state hooks: ``on_train_epoch_start(epoch)`` before the epoch,
  ``on_train_batch_end(output, batch)`` after every optimiser step (no grad), and
  ``on_train_epoch_end(epoch)`` right after the epoch's LAST training batch -- before that epoch's
  validation and checkpoint, so both see the refreshed state (Lightning itself would run
  validation first). Models that ask for an epoch-end data pass (``needs_prototype_pass``) get
  ``update_prototypes(prototype_features(images) for each training batch)`` just before;
- gathers probabilities, labels and masks over the whole validation/test epoch (all-gathered
  under DDP, de-duplicated by the sample index that DistributedSampler may repeat) and logs
  F1-frame per AU (``<split>/f1_AU<n>``) and the mean (``<split>/f1``), in [0, 1];
- re-seeds torch/numpy/random at every epoch start from ``(seed, epoch, rank)``, so an epoch is a
  function of the weights at its start: resuming from an epoch-boundary checkpoint reproduces an
  uninterrupted run exactly (deterministic CPU kernels assumed).

Validation dataloader 0 is the validation split (held-out training subjects, logged as ``val/``);
with ``selection.on_test`` the test prefix is validation dataloader 1 (logged as ``test/``) and
selection monitors ``test/f1`` -- the published habit, labelled as such in every output.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch

from audet.engine.optim import build_optimizer
from audet.models import LossContext, ModelOutput, create_model

__all__ = ["AUTask", "build_model", "loss_context_from_labels", "reseed", "epoch_seed"]


def build_model(config: dict, aus: Sequence[int]):
    """``create_model`` from a config's ``model`` section for the AU list ``aus``."""
    mcfg = config["model"]
    args = dict(mcfg.get("args") or {})
    args.pop("num_aus", None)
    args.pop("aus", None)
    try:
        return create_model(mcfg["name"], num_aus=len(aus), aus=list(aus), **args)
    except TypeError as exc:
        import inspect

        from audet.models.registry import _REGISTRY  # noqa: PLC0415

        fn = _REGISTRY.get(mcfg["name"])
        sig = ""
        if fn is not None:
            try:
                sig = f"; {mcfg['name']} accepts {inspect.signature(fn)}"
            except (TypeError, ValueError):
                pass
        raise ValueError(f"model.args {args} do not fit model {mcfg['name']!r}: {exc}{sig}") from None


def loss_context_from_labels(labels, mask=None) -> LossContext:
    """w_j and v_j (AC2D Eq. 14) from the training labels (``9`` = missing when ``mask`` is None)."""
    from audet.losses import au_weights

    labels = torch.as_tensor(np.asarray(labels)).float()
    if mask is None:
        mask = (labels == 0) | (labels == 1)
        labels = torch.where(mask, labels, torch.zeros_like(labels))
    mask = torch.as_tensor(np.asarray(mask)).float()
    w, v = au_weights(labels, mask)
    return LossContext(au_weight=torch.as_tensor(w).float(), pos_weight=torch.as_tensor(v).float())


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(rank) * 104_729) % (2**31 - 1)


def reseed(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) without touching Lightning's env variables."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class AUTask(L.LightningModule):
    """Trains ``config.model.name`` on AUs ``aus`` with the config's optimiser and schedule.

    Args:
        config: a resolved config (:func:`audet.engine.config.load_config`).
        aus: the AU numbers the model predicts (columns of the labels).
        ctx: the loss context; computed from the datamodule's training labels when ``None``.
        val_names: names under which validation dataloaders are logged (default ``["val"]``).
    """

    def __init__(self, config: dict, aus: Sequence[int], ctx: LossContext | None = None,
                 val_names: Sequence[str] | None = None):
        super().__init__()
        self.config = config
        self.aus = [int(a) for a in aus]
        self.model = build_model(config, self.aus)
        self.ctx = ctx
        self.val_names = list(val_names or ["val"])
        self.seed = int(config.get("seed") or 0)
        self._buffers_eval: dict[int, dict[str, list]] = {}
        self._epoch_end_done = False
        self._last_output: ModelOutput | None = None
        #: filled by evaluation: {split: {"f1": mean, "per_au": {au: f1}}}
        self.results: dict[str, dict] = {}

    # ------------------------------------------------------------------ model
    def forward(self, images: torch.Tensor) -> ModelOutput:
        return self.model(images)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.ctx is None:
            dm = self.trainer.datamodule
            if dm is None or not hasattr(dm, "train_labels"):
                raise ValueError("AUTask needs a datamodule with train_labels() (or pass ctx=) to weight the loss")
            got = dm.train_labels()
            labels, mask = got if isinstance(got, tuple) else (got, None)
            self.ctx = loss_context_from_labels(labels, mask)

    def _ctx(self) -> LossContext:
        ctx = self.ctx if self.ctx is not None else LossContext()
        return ctx.to(self.device)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        reseed(epoch_seed(self.seed, self.current_epoch, self.global_rank))
        self._epoch_end_done = False
        self.model.on_train_epoch_start(self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(batch["image"])
        terms = self.model.loss_terms(out, batch, self._ctx())
        if not terms:
            raise ValueError(f"{self.model.model_name}.loss_terms returned no terms")
        loss = torch.stack([t.float() for t in terms.values()]).sum()
        if not torch.isfinite(loss):
            bad = {k: float(v.detach()) for k, v in terms.items()}
            raise FloatingPointError(f"non-finite loss at epoch {self.current_epoch} step {self.global_step}: {bad}")
        bs = batch["image"].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach().float(), on_step=True, on_epoch=True, batch_size=bs)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        self._last_output = ModelOutput(out.logits.detach(), {k: v.detach() for k, v in out.aux.items()
                                                              if isinstance(v, torch.Tensor)})
        return loss

    def on_train_batch_end(self, outputs: Any, batch: dict, batch_idx: int) -> None:
        if self._last_output is not None:
            with torch.no_grad():
                self.model.on_train_batch_end(self._last_output, batch)
            self._last_output = None
        n = self.trainer.num_training_batches
        if self.trainer.is_last_batch or (isinstance(n, int) and batch_idx + 1 >= n):
            self._finish_train_epoch()

    def on_train_epoch_end(self) -> None:
        self._finish_train_epoch()  # no-op when the last batch already did it

    def _finish_train_epoch(self) -> None:
        if self._epoch_end_done:
            return
        self._epoch_end_done = True
        if getattr(self.model, "needs_prototype_pass", False):
            self._prototype_pass()
        with torch.no_grad():
            self.model.on_train_epoch_end(self.current_epoch)

    @torch.no_grad()
    def _prototype_pass(self) -> None:
        """An epoch-end pass over the training data with the current parameters (e.g. AC2D C^e(s))."""
        dm = self.trainer.datamodule
        loader = dm.prototype_dataloader() if hasattr(dm, "prototype_dataloader") else None
        if loader is None:
            return
        was_training = self.model.training
        self.model.eval()
        feats = (self.model.prototype_features(b["image"].to(self.device)) for b in loader)
        self.model.update_prototypes(feats)
        self.model.train(was_training)

    def configure_optimizers(self):
        trainer = self.trainer
        steps_total = trainer.estimated_stepping_batches
        max_epochs = max(1, int(trainer.max_epochs or 1))
        steps_per_epoch = float(steps_total) / max_epochs
        opt, sched = build_optimizer(
            self.model,
            self.config["optim"],
            batch_size=int(self.config["data"]["batch_size"]),
            world_size=int(trainer.world_size),
            accumulate=int(trainer.accumulate_grad_batches),
            steps_per_epoch=steps_per_epoch,
            max_epochs=max_epochs,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict, dataloader_idx: int) -> None:
        out = self.model(batch["image"])
        probs = torch.sigmoid(out.logits.float())
        labels, mask = batch["labels"], batch["mask"]
        if probs.ndim == 3:  # clips: score every frame of every clip
            probs, labels, mask = (t.reshape(-1, t.shape[-1]) for t in (probs, labels, mask))
            T = out.logits.shape[1]
            frame = torch.arange(T, device=probs.device)
            index = (batch["index"].reshape(-1, 1).to(probs.device) * T + frame).reshape(-1)
        else:
            index = batch.get("index", torch.full((probs.shape[0],), -1, device=probs.device))
        buf = self._buffers_eval.setdefault(dataloader_idx, {"p": [], "y": [], "m": [], "i": []})
        buf["p"].append(probs.detach())
        buf["y"].append(labels.detach().float())
        buf["m"].append(mask.detach().float())
        buf["i"].append(index.detach().long().reshape(-1))

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_start(self) -> None:
        self._buffers_eval = {}

    def on_test_epoch_start(self) -> None:
        self._buffers_eval = {}

    def _gathered(self, idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        buf = self._buffers_eval.get(idx)
        A = len(self.aus)
        if not buf or not buf["p"]:
            p = torch.zeros(0, A, device=self.device)
            y, m, i = p.clone(), p.clone(), torch.zeros(0, dtype=torch.long, device=self.device)
        else:
            p, y, m, i = (torch.cat(buf[k]) for k in ("p", "y", "m", "i"))
        if self.trainer is not None and self.trainer.world_size > 1:
            # DistributedSampler gives every rank the same number of samples (padding by repeats)
            p, y, m, i = (self.all_gather(t).reshape(-1, *t.shape[1:]) for t in (p, y, m, i))
            if (i >= 0).all():
                _, first = np.unique(i.cpu().numpy(), return_index=True)
                keep = torch.as_tensor(np.sort(first), device=p.device)
                p, y, m = p[keep], y[keep], m[keep]
        return p.float().cpu().numpy(), y.cpu().numpy(), m.cpu().numpy()

    def _log_split(self, split: str, idx: int) -> None:
        from audet.metrics import f1_frame

        probs, labels, mask = self._gathered(idx)
        if probs.shape[0] == 0:
            return
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.filterwarnings("ignore", message="f1_frame")
            f1 = np.asarray(f1_frame(labels, probs, mask=mask), dtype=np.float64)
        mean = float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")
        # every rank computed the same values from the gathered epoch; sync_dist only silences the
        # "log with sync_dist" warning (a mean of equal numbers)
        sync = self.trainer.world_size > 1
        self.log(f"{split}/f1", mean, prog_bar=(split == "val"), sync_dist=sync)
        for au, v in zip(self.aus, f1):
            self.log(f"{split}/f1_AU{au}", float(v), sync_dist=sync)
        self.results[split] = {
            "f1": mean,
            "per_au": {int(a): float(v) for a, v in zip(self.aus, f1)},
            "n": int(probs.shape[0]),
            "epoch": int(self.current_epoch),
        }
        self._last_eval = {"split": split, "probs": probs, "labels": labels, "mask": mask}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._buffers_eval = {}
            return
        for idx in sorted(self._buffers_eval) or [0]:
            name = self.val_names[idx] if idx < len(self.val_names) else f"val{idx}"
            self._log_split(name, idx)
        self._buffers_eval = {}

    def on_test_epoch_end(self) -> None:
        name = getattr(self, "test_name", "test")
        for idx in sorted(self._buffers_eval) or [0]:
            self._log_split(name if idx == 0 else f"{name}{idx}", idx)
        self._buffers_eval = {}
