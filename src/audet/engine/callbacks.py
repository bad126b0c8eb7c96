"""Lightning callbacks of the engine: safetensors export of best/last, summary, test helpers."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from audet.models.checkpoint import save_checkpoint

__all__ = ["ExportCheckpoints", "StopAfterSteps", "StopTraining", "validation_thresholds"]


class StopTraining(RuntimeError):
    """Raised by :class:`StopAfterSteps` to simulate a crash (tests of resuming)."""


class ExportCheckpoints(Callback):
    """Write ``best.safetensors`` (+ ``.json``) when the monitored metric improves and
    ``last.safetensors`` after every epoch, from global rank 0.

    ``monitor`` is ``"val/f1"`` (validation split) or ``"test/f1"`` (``selection.on_test``), or
    ``None`` (no selection: best = last). The best score and epoch are part of Lightning's
    checkpoint (``state_dict``), so a resumed run keeps selecting against the true best.
    """

    def __init__(self, run_dir: str | Path, config: dict, monitor: str | None, mode: str = "max",
                 selection_label: str = "validation", extra: dict | None = None):
        super().__init__()
        self.extra = dict(extra or {})
        self.run_dir = Path(run_dir)
        self.config = config
        self.monitor = monitor
        self.mode = mode
        self.selection_label = selection_label
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []

    # --- persisted in last.ckpt
    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.best_score = state.get("best_score")
        self.best_epoch = state.get("best_epoch")
        self.history = list(state.get("history", []))

    def _metrics(self, trainer: L.Trainer) -> dict[str, float]:
        out = {}
        for k, v in trainer.callback_metrics.items():
            if "/f1" in k or k.startswith(("val/", "test/")):
                try:
                    out[k] = float(v)
                except (TypeError, ValueError):
                    pass
        return out

    def _improved(self, score: float) -> bool:
        if score is None or math.isnan(score):
            return False
        if self.best_score is None:
            return True
        return score > self.best_score if self.mode == "max" else score < self.best_score

    def _save(self, trainer: L.Trainer, pl_module, name: str, metrics: dict) -> None:
        extra = dict(self.extra)
        thr = validation_thresholds(pl_module, int(trainer.current_epoch))
        if thr is not None:
            extra["thresholds"] = thr
        save_checkpoint(
            pl_module.model,
            self.run_dir / f"{name}.safetensors",
            config=self.config,
            epoch=int(trainer.current_epoch),
            global_step=int(trainer.global_step),
            metrics=metrics,
            extra={"selection": {"monitor": self.monitor, "mode": self.mode, "on": self.selection_label,
                                 "best_epoch": self.best_epoch, "best_score": self.best_score},
                   "kind": name, **extra},
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor is None:
            return
        metrics = self._metrics(trainer)
        score = metrics.get(self.monitor)
        improved = self._improved(score) if score is not None else False
        if improved:
            self.best_score, self.best_epoch = float(score), int(trainer.current_epoch)
        self.history.append({"epoch": int(trainer.current_epoch), **metrics})
        if improved and trainer.is_global_zero:
            self._save(trainer, pl_module, "best", metrics)
        trainer.strategy.barrier("audet-export-best")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        metrics = self._metrics(trainer)
        if self.monitor is None:
            self.best_epoch, self.best_score = int(trainer.current_epoch), None
        if trainer.is_global_zero:
            self._save(trainer, pl_module, "last", metrics)
            if self.monitor is None:
                self._save(trainer, pl_module, "best", metrics)
        trainer.strategy.barrier("audet-export-last")


def validation_thresholds(pl_module, epoch: int) -> dict | None:
    """Per-AU thresholds chosen on THIS epoch's validation pass (held-out training subjects; never
    the test fold): ``{"aus", "values", "chosen_on", "epoch", "n_frames"}``, or None when the
    epoch had no validation pass (:func:`audet.metrics.choose_thresholds`)."""
    ev = (getattr(pl_module, "last_evals", None) or {}).get("val")
    if not ev or ev.get("epoch") != epoch or len(ev["probs"]) == 0:
        return None
    from audet.metrics import choose_thresholds

    t = choose_thresholds(ev["labels"], ev["probs"], mask=ev["mask"])
    return {"aus": [int(a) for a in pl_module.aus], "values": [float(v) for v in t],
            "chosen_on": "validation split (held-out training subjects)", "epoch": int(epoch),
            "n_frames": int(len(ev["probs"]))}


class StopAfterSteps(Callback):
    """Raise :class:`StopTraining` after ``steps`` optimiser steps (simulates a killed run)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = int(steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.steps:
            raise StopTraining(f"stopped after {trainer.global_step} steps (simulated crash)")
