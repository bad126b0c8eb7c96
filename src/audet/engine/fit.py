"""``fit(config)``: train one run with Lightning (loggers, checkpoints, resuming, DDP, reports).

A run directory (``output.dir``, default ``runs/<name>``) holds::

    config.yaml                the resolved config (after recipe and overrides)
    checkpoints/last.ckpt      Lightning's full training state, for resuming (atomic)
    best.safetensors/.json     weights selected on the validation split (or on the test fold with
                               selection.on_test, labelled so), metadata
    last.safetensors/.json     weights after the last finished epoch
    init_map.json              which AU branches came from model.init_from (if used)
    logs/csv/version_N/metrics.csv, logs/tb/version_N/   (one version per (re)start)
    results.json, report.md, report.csv   test-prefix F1 of best and last, selection policy
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch

from audet.engine.callbacks import ExportCheckpoints
from audet.engine.config import dump_config, get
from audet.engine.data import FitData, build_datamodule
from audet.engine.task import AUTask
from audet.utils.io import write_json_atomic, write_text_atomic

__all__ = ["fit", "run_dir_of", "build_trainer", "resolve_precision", "monitor_of"]


def run_dir_of(config: dict) -> Path:
    return Path(get(config, "output.dir") or Path("runs") / (config.get("name") or "run"))


def resolve_precision(precision: Any, accelerator: str = "auto") -> str:
    """``auto`` -> ``"16-mixed"`` on CUDA, else ``"32-true"``; anything else is passed through.

    ``"bf16-mixed"`` on CPU is opt-in (faster on CPUs with AVX-512 bf16; check the accuracy).
    """
    p = str(precision)
    if p != "auto":
        return {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}.get(p, p)
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "16-mixed"
    return "32-true"


def monitor_of(config: dict, has_val: bool) -> tuple[str | None, str]:
    """(metric to monitor, label of the selection split)."""
    metric = get(config, "selection.monitor") or "f1"
    if get(config, "selection.on_test"):
        return f"test/{metric}", "test fold (published habit; inflates results)"
    if has_val:
        return f"val/{metric}", "validation subjects held out from training"
    return None, "none (last epoch; data.val_fraction is 0)"


def _progress_bar(setting: Any) -> bool:
    if isinstance(setting, bool):
        return setting
    if str(setting).lower() in ("true", "1", "yes"):
        return True
    if str(setting).lower() in ("false", "0", "no"):
        return False
    return sys.stderr.isatty() and not os.environ.get("CI")


def _atomic_io():
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from audet.utils.io import atomic_path

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Lightning's checkpoint IO, written to a temporary file then ``os.replace``d: a run killed
        while saving keeps the previous ``last.ckpt``."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            with atomic_path(path) as tmp:
                super().save_checkpoint(checkpoint, tmp, storage_options)

    return AtomicCheckpointIO


def AtomicCheckpointIO():  # noqa: N802 (a factory so that importing this module stays light)
    return _atomic_io()()


def build_trainer(config: dict, run_dir: Path, callbacks: Sequence[L.Callback] = (), *, enable_logging: bool = True) -> L.Trainer:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    t = config["trainer"]
    strategy: Any = t.get("strategy", "auto")
    if strategy in ("ddp", "ddp_spawn") and t.get("find_unused_parameters"):
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(start_method="spawn" if strategy == "ddp_spawn" else "popen", find_unused_parameters=True)
    loggers: list = []
    if enable_logging:
        csv = CSVLogger(save_dir=str(run_dir / "logs"), name="csv")
        loggers.append(csv)
        if t.get("tensorboard", True):
            try:
                loggers.append(TensorBoardLogger(save_dir=str(run_dir / "logs"), name="tb", version=csv.version,
                                                 default_hp_metric=False))
            except ModuleNotFoundError:  # tensorboard is a dependency, but keep training without it
                warnings.warn("tensorboard is not installed; logging to CSV only", stacklevel=2)
    # the newest state as checkpoints/last.ckpt after every epoch (monitor=None + top-1 = keep the latest)
    ckpt = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="last", monitor=None, save_top_k=1,
                           save_last=False, enable_version_counter=False)
    cbs = [*callbacks, ckpt]
    if loggers:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    kwargs = dict(
        max_epochs=int(t["max_epochs"]),
        accelerator=t.get("accelerator", "auto"),
        devices=t.get("devices", 1),
        num_nodes=int(t.get("num_nodes", 1)),
        strategy=strategy,
        precision=resolve_precision(t.get("precision", "auto"), t.get("accelerator", "auto")),
        gradient_clip_val=t.get("gradient_clip_val"),
        gradient_clip_algorithm=t.get("gradient_clip_algorithm", "norm"),
        deterministic=bool(t.get("deterministic", False)),
        log_every_n_steps=int(t.get("log_every_n_steps", 50)),
        accumulate_grad_batches=int(t.get("accumulate_grad_batches", 1)),
        check_val_every_n_epoch=int(t.get("check_val_every_n_epoch", 1)),
        num_sanity_val_steps=int(t.get("num_sanity_val_steps", 0)),
        enable_progress_bar=_progress_bar(t.get("progress_bar", "auto")),
        enable_model_summary=False,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        callbacks=cbs,
        default_root_dir=str(run_dir),
    )
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if t.get(key) is not None:
            kwargs[key] = t[key]
    return L.Trainer(**kwargs)


def _should_resume(config: dict, resume: bool | None, last: Path) -> Path | None:
    setting = str(get(config, "output.resume", "auto")).lower() if resume is None else ("true" if resume else "false")
    if setting == "false":
        return None
    if last.is_file():
        return last
    if setting == "true" and resume:
        raise FileNotFoundError(f"--resume: no {last} to resume from")
    return None


_QUIET = (
    r".*isinstance\(treespec, LeafSpec\)",  # torch/lightning pytree deprecation
    r".*Using `DistributedSampler` with the dataloaders. During `trainer.test\(\)`",  # we de-duplicate
    r".*The number of training batches .* is smaller than the logging interval",
    r".*torch.distributed.nn.functional.all_gather is deprecated",
    r".*does not have many workers which may be a bottleneck",
)


def _quiet_warnings() -> None:
    for pattern in _QUIET:
        warnings.filterwarnings("ignore", message=pattern)


def fit(
    config: dict,
    *,
    resume: bool | None = None,
    callbacks: Sequence[L.Callback] = (),
    datamodule=None,
    fold: int | None = None,
    verbose: bool = True,
) -> dict:
    """Train ``config``; return the results dict (also written to ``<run_dir>/results.json``).

    ``resume``: ``None`` follows ``output.resume`` (``auto``: continue from
    ``checkpoints/last.ckpt`` when present), ``True`` requires it, ``False`` starts afresh.
    """
    _quiet_warnings()
    run_dir = run_dir_of(config)
    seed = int(config.get("seed") or 0)
    L.seed_everything(seed, workers=True, verbose=False)
    if get(config, "trainer.deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=True)

    if datamodule is None:
        # the model's preprocessing (crop size, mean/std, clip) decides the transforms
        from audet.engine.data import dataset_meta
        from audet.engine.task import build_model

        aus0 = get(config, "data.aus") or (dataset_meta(get(config, "data.root")).get("aus")
                                            if get(config, "data.root") else None)
        preprocess = dict(build_model(config, aus0).preprocess) if aus0 else None
        inner = build_datamodule(config, fold=fold, preprocess=preprocess)
        L.seed_everything(seed, workers=True, verbose=False)
    else:
        inner = datamodule
    on_test = bool(get(config, "selection.on_test"))
    data = FitData(inner, seed=seed, on_test=on_test)
    data.setup("fit")
    aus = data.aus
    monitor, selection_label = monitor_of(config, data.has_val)
    if on_test:
        warnings.warn("selection.on_test=true: the best epoch is chosen ON THE TEST FOLD (the published habit); "
                      "results are optimistic and labelled so", stacklevel=2)
    task = AUTask(config, aus, val_names=data.val_names)
    export = ExportCheckpoints(run_dir, config, monitor, get(config, "selection.mode") or "max", selection_label)
    trainer = build_trainer(config, run_dir, [export, *callbacks])

    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = _should_resume(config, resume, last_ckpt)
    init_report = None
    if get(config, "model.init_from") and ckpt_path is None:
        from audet.engine.checkpoint import init_from_checkpoint

        init_report = init_from_checkpoint(task.model, get(config, "model.init_from"),
                                           strict_trunk=bool(get(config, "model.init_strict_trunk", True)))
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", dump_config(config))
        if init_report is not None:
            write_json_atomic(run_dir / "init_map.json", _init_summary(init_report))
            if verbose:
                print(_init_text(init_report), flush=True)
        if verbose and ckpt_path is not None:
            print(f"resuming from {ckpt_path}", flush=True)

    trainer.fit(task, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)

    results: dict[str, Any] = {
        "name": config.get("name"),
        "model": config["model"]["name"],
        "aus": aus,
        "recipe": config.get("recipe"),
        "selection": {"monitor": monitor, "on": selection_label, "on_test": on_test,
                      "best_epoch": export.best_epoch, "best_score": export.best_score},
        "epochs": int(trainer.current_epoch),
        "history": export.history,
        "run_dir": str(run_dir),
        "val_subjects": data.subjects("val"),
        "test_subjects": data.subjects("test"),
    }
    if init_report is not None:
        results["init_from"] = _init_summary(init_report)
    if get(config, "selection.test_after_fit") and get(config, "data.test_root"):
        results["test"] = _test_other_root(config, trainer, run_dir, results)
    elif get(config, "selection.test_after_fit") and _has_test(inner):
        results["test"] = _test_best_and_last(task, trainer, data, run_dir)
    if trainer.is_global_zero:
        from audet.engine.reports import write_run_report

        write_run_report(run_dir, results)
        if verbose:
            from audet.engine.reports import summary_text

            print(summary_text(results), flush=True)
    return results


def _has_test(inner) -> bool:
    return bool(getattr(inner, "test_prefix", None)) or hasattr(inner, "test_dataloader")


def _test_best_and_last(task: AUTask, trainer: L.Trainer, data: FitData, run_dir: Path) -> dict:
    from audet.engine.checkpoint import load_state_strict, read_state_dict

    out = {}
    data.inner.setup("test")
    task.test_name = "test"
    for which in ("best", "last"):
        path = run_dir / f"{which}.safetensors"
        trainer.strategy.barrier(f"audet-test-{which}")
        if not path.is_file():
            continue
        load_state_strict(task.model, {k: v.to(task.device) for k, v in read_state_dict(path).items()}, str(path))
        task.results.pop("test", None)
        trainer.test(task, dataloaders=data.test_dataloader(), verbose=False)
        res = task.results.get("test")
        if res is not None:
            meta = json.loads((run_dir / f"{which}.json").read_text())
            out[which] = {**res, "epoch": meta.get("epoch")}
    return out


def _test_other_root(config: dict, trainer: L.Trainer, run_dir: Path, results: dict) -> dict:
    """Cross-dataset test (e.g. BP4D -> BP4D+): ``evaluate`` best and last on data.test_root (rank 0)."""
    from audet.engine.evaluate import evaluate

    out: dict = {}
    trainer.strategy.barrier("audet-test-other")
    if not trainer.is_global_zero:
        return out
    for which in ("best", "last"):
        path = run_dir / f"{which}.safetensors"
        if not path.is_file():
            continue
        r = evaluate(path, get(config, "data.test_root"), get(config, "data.test_prefix"),
                     batch_size=int(get(config, "data.eval_batch_size") or get(config, "data.batch_size")),
                     num_workers=int(get(config, "data.num_workers") or 0))
        row = r["table"].iloc[0]
        meta = json.loads((run_dir / f"{which}.json").read_text())
        out[which] = {"f1": float(row["Avg"]) / 100, "per_au": {a: float(row[f"AU{a}"]) / 100 for a in r["aus"]},
                      "n": r["n"], "epoch": meta.get("epoch"), "data": r["data"], "aus": r["aus"]}
    results["test_aus"] = out.get("best", out.get("last", {})).get("aus")
    return out


def _init_summary(report: dict) -> dict:
    return {
        "source": report.get("source"),
        "source_model": report.get("source_model"),
        "source_aus": report.get("source_aus"),
        "mapped_aus": {str(k): v for k, v in (report.get("mapped_aus") or {}).items()},
        "fresh_aus": report.get("fresh_aus"),
        "dropped_aus": report.get("dropped_aus"),
        "method": report.get("method"),
        "n_copied": len(report.get("copied") or []),
        "n_per_au": len(report.get("per_au") or []),
        "kept": report.get("kept"),
    }


def _init_text(report: dict) -> str:
    mapped = ", ".join(f"AU{k}<-AU{v}" for k, v in (report.get("mapped_aus") or {}).items()) or "none"
    fresh = ", ".join(f"AU{a}" for a in report.get("fresh_aus") or []) or "none"
    return (f"init_from {report.get('source')} ({report.get('source_model')}): mapped {mapped}; "
            f"fresh init {fresh}; {len(report.get('copied') or [])} shared tensors copied")
