"""``AUTask``: the one LightningModule that trains and evaluates every registered model.

The task never names a method; everything method-specific is a hook of
:class:`audet.models.base.AUModel` (docs/adding-a-method.md). It

- wraps a model built ONCE by the engine (:func:`build_model`: ``create_model(config.model.name,
  aus=..., data=DataInfo, **config.model.args)``);
- asks the model for its loss context once when fitting starts
  (``model.loss_context(data_info, labels, mask)`` over the training labels) and sums the named
  terms of ``model.loss_terms(output, batch, ctx)`` in ``training_step``, logging each term
  (``train/<term>``) and the total (``train/loss``);
- before every optimiser step, drops the gradients of the parameters the model lists in
  ``parameters_without_gradient()`` (so the optimiser skips them: no weight decay);
- calls the model's state hooks: ``on_train_epoch_start(epoch)`` before the epoch,
  ``on_train_batch_end(output, batch)`` after every optimiser step (no grad), and -- right after
  the epoch's LAST training batch, before that epoch's validation and checkpoint (Lightning itself
  would validate first) -- the epoch-end data pass when ``model.wants_data_pass(epoch)``
  (``data_pass_step(batch)`` over the training set in order, eval mode, no grad, then
  ``data_pass_end(results)``) followed by ``on_train_epoch_end(epoch)``;
- in a ``labels_only`` stage trains on batches of labels (the keys ``model.batch_keys(stage)``
  names; no image is read) and calls no forward: ``loss_terms`` gets zero logits;
- in a ``collect_only`` stage runs no training step at all: the training loader IS the data-pass
  loader, each batch goes to ``data_pass_step`` and the epoch ends with ``data_pass_end``;
- evaluates with :class:`audet.engine.scoring.AUEvaluator` on ``model.forward_logits`` (every
  labelled frame once; all-gathered and de-duplicated under DDP) and logs F1-frame per AU
  (``<split>/f1_AU<n>``) and the mean (``<split>/f1``), in [0, 1];
- re-seeds torch/numpy/random at every epoch start from ``(seed, epoch, rank)``, so an epoch is a
  function of the weights at its start: resuming from an epoch-boundary checkpoint reproduces an
  uninterrupted run exactly (deterministic CPU kernels assumed).

Validation dataloader 0 is the validation split (held-out training subjects, logged as ``val/``);
with ``selection.on_test`` the test prefix is validation dataloader 1 (logged as ``test/``) and
selection monitors ``test/f1`` -- the published habit, labelled as such in every output.
"""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import lightning as L
import numpy as np
import torch

from audet.engine.scoring import AUEvaluator
from audet.engine.optim import build_optimizer
from audet.engine.schema import Config, Optim, as_config
from audet.models import LossContext, ModelOutput, create_model

__all__ = ["AUTask", "build_model", "reseed", "epoch_seed"]


def build_model(config: Config | Mapping, aus: Sequence[int], data=None):
    """``create_model`` from a config's ``model`` section for the AU list ``aus`` and the
    :class:`~audet.models.base.DataInfo` ``data``."""
    name = as_config(config).model.name
    args = {k: v for k, v in dict(as_config(config).model.args or {}).items() if k not in ("num_aus", "aus", "data")}
    try:
        return create_model(name, aus=list(aus), data=data, **args)
    except TypeError as exc:
        raise ValueError(f"model.args {args} do not fit model {name!r}: {exc}") from None


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(rank) * 104_729) % (2**31 - 1)


def reseed(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) without touching Lightning's env variables."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class AUTask(L.LightningModule):
    """Trains ``model`` with the config's (or the stage's) optimiser and schedule.

    Args:
        config: the typed config (:class:`audet.engine.schema.Config`; a resolved dict is converted).
        model: the :class:`~audet.models.base.AUModel` (built once by the engine).
        ctx: the loss context; from ``model.loss_context`` over the datamodule's training labels
            when ``None``.
        val_names: names under which validation dataloaders are logged (default ``["val"]``).
        optim: the optimiser section to use (default ``config.optim``; a stage's ``stage.optim``).
        collect_only: no training steps, only the data pass (a ``collect_only`` stage).
        labels_only: batches hold labels only; no forward (a ``labels_only`` stage).
        seed: the seed of the epoch re-seeding (default ``config.seed``).
    """

    def __init__(self, config: Config | Mapping, model, ctx: LossContext | None = None,
                 val_names: Sequence[str] | None = None, *, optim: Optim | None = None,
                 collect_only: bool = False, seed: int | None = None, labels_only: bool = False):
        super().__init__()
        self.config = config = as_config(config)
        self.model = model
        self.aus = [int(a) for a in model.aus]
        self.ctx = ctx
        self.val_names = list(val_names or ["val"])
        self.optim_cfg = optim if optim is not None else config.optim
        self.collect_only = bool(collect_only)
        self.labels_only = bool(labels_only)
        self.automatic_optimization = not self.collect_only
        self.seed = int(config.seed or 0) if seed is None else int(seed)
        self._evaluators: dict[int, AUEvaluator] = {}
        self._epoch_end_done = False
        self._last_output: ModelOutput | None = None
        self._pass_results: list = []
        #: filled by evaluation: {split: {"f1": mean, "per_au": {au: f1}, "n", "epoch"}}
        self.results: dict[str, dict] = {}
        #: the name the test dataloader is logged under
        self.test_name = "test"
        #: per-AU decision thresholds by split name (set before testing; chosen on validation)
        self.thresholds: dict[str, Sequence[float]] = {}
        self.last_evals: dict[str, dict] = {}

    # ------------------------------------------------------------------ model
    def forward(self, images: torch.Tensor) -> ModelOutput:
        return self.model(images)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.ctx is None:
            dm = self.trainer.datamodule
            if dm is None or not (hasattr(dm, "training_labels") or hasattr(dm, "train_labels")):
                raise ValueError("AUTask needs a datamodule with train_labels() (or pass ctx=) to weight the loss")
            if hasattr(dm, "training_labels"):
                labels, mask = dm.training_labels()
            else:
                from audet.engine.data import label_arrays

                got = dm.train_labels()
                labels, mask = label_arrays(*got) if isinstance(got, tuple) else label_arrays(got)
            self.ctx = self.model.loss_context(self.model.data_info, labels, mask)

    def _ctx(self) -> LossContext:
        ctx = self.ctx if self.ctx is not None else LossContext()
        return ctx.to(self.device)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        reseed(epoch_seed(self.seed, self.current_epoch, self.global_rank))
        self._epoch_end_done = False
        self._pass_results = []
        self.model.on_train_epoch_start(self.current_epoch)
        if self.collect_only:  # the pass runs in eval mode (no training step in this stage)
            self.model.eval()

    def training_step(self, batch: dict, batch_idx: int):
        if self.collect_only:
            with torch.no_grad():
                self._pass_results.append(self.model.data_pass_step(batch))
            return None
        if self.labels_only:  # no image in the batch: the stage's losses use the labels only
            bs = batch["labels"].shape[0]
            out = ModelOutput(batch["labels"].new_zeros(bs, self.model.num_aus), {})
        else:
            bs = batch["image"].shape[0]
            out = self.model(batch["image"])
        terms = self.model.loss_terms(out, batch, self._ctx())
        if not terms:
            raise ValueError(f"{self.model.model_name}.loss_terms returned no terms")
        loss = torch.stack([t.float() for t in terms.values()]).sum()
        if not torch.isfinite(loss):
            bad = {k: float(v.detach()) for k, v in terms.items()}
            raise FloatingPointError(f"non-finite loss at epoch {self.current_epoch} step {self.global_step}: {bad}")
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
        epoch = self.current_epoch
        if self.collect_only:
            with torch.no_grad():
                self.model.data_pass_end(self._pass_results)
            self._pass_results = []
            self.model.train(self.training)
        elif self.model.wants_data_pass(epoch):
            self._data_pass()
        with torch.no_grad():
            self.model.on_train_epoch_end(epoch)

    @torch.no_grad()
    def _data_pass(self) -> None:
        """The epoch-end pass over the training data in order, current parameters, eval mode."""
        from lightning.fabric.utilities.apply_func import move_data_to_device

        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "data_pass_dataloader"):
            raise ValueError(f"{self.model.model_name} asks for an epoch-end data pass but the datamodule "
                             "has no data_pass_dataloader() (use audet.engine.data.FitData)")
        was_training = self.model.training
        self.model.eval()
        try:
            results = [self.model.data_pass_step(move_data_to_device(b, self.device))
                       for b in dm.data_pass_dataloader()]
            self.model.data_pass_end(results)
        finally:
            self.model.train(was_training)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Parameters the model says took no part in this step's loss get ``grad = None``: the
        optimiser then skips them (no weight decay, no moment update), as for a parameter outside
        the graph (:meth:`audet.models.base.AUModel.parameters_without_gradient`)."""
        names = set(self.model.parameters_without_gradient())
        if names:
            for name, p in self.model.named_parameters():
                if name in names:
                    p.grad = None

    def configure_optimizers(self):
        if self.collect_only:
            return None
        trainer = self.trainer
        steps_total = trainer.estimated_stepping_batches
        max_epochs = max(1, int(trainer.max_epochs or 1))
        steps_per_epoch = float(steps_total) / max_epochs
        opt, sched = build_optimizer(
            self.model,
            self.optim_cfg,
            batch_size=self.config.data.batch_size,
            world_size=int(trainer.world_size),
            accumulate=int(trainer.accumulate_grad_batches),
            steps_per_epoch=steps_per_epoch,
            max_epochs=max_epochs,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict, dataloader_idx: int) -> None:
        ev = self._evaluators.get(dataloader_idx)
        if ev is None:
            conv = self.config.selection.f1_convention
            ev = self._evaluators[dataloader_idx] = AUEvaluator(self.aus, convention=conv)
        ev.process(batch, self.model.forward_logits(batch["image"]))

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_start(self) -> None:
        self._evaluators = {}

    def on_test_epoch_start(self) -> None:
        self._evaluators = {}

    def _gathered(self, idx: int) -> AUEvaluator:
        conv = self.config.selection.f1_convention
        ev = self._evaluators.get(idx) or AUEvaluator(self.aus, convention=conv)
        if self.trainer is not None and self.trainer.world_size > 1:
            # DistributedSampler gives every rank the same number of samples (padding by repeats);
            # the evaluator's (sequence, frame) keys remove the repeats
            st = ev.state()
            gathered = {k: self.all_gather(torch.as_tensor(v, device=self.device)).cpu().numpy() for k, v in st.items()}
            world = self.trainer.world_size
            ev.merge([{k: v[r] for k, v in gathered.items()} for r in range(world)])
        return ev

    def _log_split(self, split: str, idx: int) -> None:
        thresholds = self.thresholds.get(split)
        res = self._gathered(idx).evaluate(thresholds=thresholds)
        if res["n"] == 0:
            return
        # every rank computed the same values from the gathered epoch; sync_dist only silences the
        # "log with sync_dist" warning (a mean of equal numbers)
        sync = self.trainer.world_size > 1
        self.log(f"{split}/f1", res["f1"], prog_bar=(split == "val"), sync_dist=sync)
        for au, v in res["per_au"].items():
            self.log(f"{split}/f1_AU{au}", float(v), sync_dist=sync)
        for key in ("f1_micro", "auc_mean", "ap_mean"):
            if np.isfinite(res[key]):
                self.log(f"{split}/{key.replace('_mean', '')}", float(res[key]), sync_dist=sync)
        self.results[split] = {k: res[k] for k in ("f1", "per_au", "n", "f1_micro", "auc", "ap", "auc_mean",
                                                   "ap_mean") if k in res}
        self.results[split]["epoch"] = int(self.current_epoch)
        if "tuned" in res:
            self.results[split]["tuned"] = res["tuned"]
        #: the arrays of each split's latest evaluation (the validation split's give the thresholds)
        self.last_evals[split] = {"probs": res["probs"], "labels": res["labels"], "mask": res["mask"],
                                  "epoch": int(self.current_epoch)}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._evaluators = {}
            return
        for idx in sorted(self._evaluators) or [0]:
            name = self.val_names[idx] if idx < len(self.val_names) else f"val{idx}"
            self._log_split(name, idx)
        self._evaluators = {}

    def on_test_epoch_end(self) -> None:
        name = self.test_name
        for idx in sorted(self._evaluators) or [0]:
            self._log_split(name if idx == 0 else f"{name}{idx}", idx)
        self._evaluators = {}
