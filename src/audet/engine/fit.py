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

A config with ``stages`` (docs/training.md) runs every stage in order, each in its own
subdirectory ``stages/<index>_<name>/`` with the layout above (its own ``checkpoints/last.ckpt``,
``best``/``last`` exports, logs) plus ``stage.json`` once the stage has finished. A restart skips
the finished stages and continues the current one from its ``last.ckpt``; the run directory's
``best``/``last`` are the final stage's, and ``results.json`` lists every stage. Per stage the
engine freezes the model's frozen pretrained parts and the stage's ``frozen`` patterns (eval mode,
no grad, not optimised), leaves only ``trainable`` parameters to the stage's optimiser, calls
``model.on_stage_start(name)`` and initialises from the previous stage's ``last`` weights
(``init: previous``), the weights as built (``none``) or a checkpoint (a path). The model is
built ONCE, from :meth:`FitData.data_info`, before the datasets (which then follow the model's
preprocessing).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import logging
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import torch

from audet.engine.callbacks import ExportCheckpoints
from audet.engine.config import dump_config
from audet.engine.data import FitData, build_datamodule
from audet.engine.schema import Config, Stage, as_config
from audet.engine.task import AUTask
from audet.utils.io import write_json_atomic, write_text_atomic

__all__ = ["fit", "run_dir_of", "build_trainer", "resolve_precision", "monitor_of", "run_inputs", "check_run_dir"]

log = logging.getLogger(__name__)


def run_dir_of(config: Config | Mapping) -> Path:
    cfg = as_config(config)
    return Path(cfg.output.dir or Path("runs") / (cfg.name or "run"))


#: config keys that do not change what a run computes: not compared with a run directory's manifest
NOT_COMPARED = ("name", "output", "data.num_workers", "trainer.progress_bar", "trainer.tensorboard",
                "trainer.log_every_n_steps")
#: what a fresh start removes from a run directory made by other inputs (logs stay, as older versions)
_RUN_OUTPUTS = ("checkpoints", "stages", "best.safetensors", "best.json", "last.safetensors", "last.json",
                "results.json", "report.md", "report.csv", "init_map.json", "config.yaml")


def run_inputs(config: Config | Mapping) -> dict:
    """What decides a run's results: the config less :data:`NOT_COMPARED` (recorded in the run
    directory's manifest, :mod:`audet.utils.manifest`)."""
    import copy

    cfg = as_config(config).to_dict() if not isinstance(config, Mapping) else copy.deepcopy(dict(config))
    for key in NOT_COMPARED:
        *head, leaf = key.split(".")
        d = cfg
        for h in head:
            d = d.get(h) or {}
        if isinstance(d, dict):
            d.pop(leaf, None)
    return {"config": cfg}


def check_run_dir(config: Config | Mapping, fresh: bool = False) -> str:
    """``"new"``, ``"same"`` or ``"fresh"`` for the run directory of ``config``; raises
    :class:`audet.utils.manifest.OutputMismatch` (one line: what changed, ``--overwrite``) when it
    holds a run of another config and ``fresh`` is False. Writes nothing."""
    from audet.utils.manifest import check_output

    return check_output(run_dir_of(config), run_inputs(config), command="train", fresh=fresh, ignore=("logs",),
                        what="run directory")


def _clear_run(run_dir: Path) -> None:
    for name in _RUN_OUTPUTS:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


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


def monitor_of(config: Config | Mapping, has_val: bool) -> tuple[str | None, str]:
    """(metric to monitor, label of the selection split)."""
    sel = as_config(config).selection
    metric = sel.monitor
    if sel.on_test:
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


def build_trainer(config: Config | Mapping, run_dir: Path, callbacks: Sequence[L.Callback] = (), *,
                  enable_logging: bool = True) -> L.Trainer:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    t = as_config(config).trainer
    strategy: Any = t.strategy
    if strategy in ("ddp", "ddp_spawn") and t.find_unused_parameters:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(start_method="spawn" if strategy == "ddp_spawn" else "popen", find_unused_parameters=True)
    loggers: list = []
    if enable_logging:
        csv = CSVLogger(save_dir=str(run_dir / "logs"), name="csv")
        loggers.append(csv)
        if t.tensorboard == "auto":
            import importlib.util

            use_tb = importlib.util.find_spec("tensorboard") is not None or \
                importlib.util.find_spec("tensorboardX") is not None
        else:
            use_tb = t.tensorboard
        if use_tb:
            try:
                loggers.append(TensorBoardLogger(save_dir=str(run_dir / "logs"), name="tb", version=csv.version,
                                                 default_hp_metric=False))
            except ModuleNotFoundError:  # the optional extra: pip install audet[tensorboard]
                warnings.warn("tensorboard is not installed (pip install 'audet[tensorboard]'); logging to CSV "
                              "only (trainer.tensorboard=false silences this)", stacklevel=2)
    # the newest state as checkpoints/last.ckpt after every epoch (monitor=None + top-1 = keep the latest)
    ckpt = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="last", monitor=None, save_top_k=1,
                           save_last=False, enable_version_counter=False)
    cbs = [*callbacks, ckpt]
    if loggers:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    # the trainer section's keys that are Lightning's own Trainer arguments, passed as they are
    same = ("max_epochs", "accelerator", "devices", "num_nodes", "gradient_clip_val", "gradient_clip_algorithm",
            "deterministic", "log_every_n_steps", "accumulate_grad_batches", "check_val_every_n_epoch",
            "num_sanity_val_steps", "limit_train_batches", "limit_val_batches", "limit_test_batches")
    kwargs = {k: getattr(t, k) for k in same if getattr(t, k) is not None or k == "gradient_clip_val"}
    kwargs.update(
        strategy=strategy,
        precision=resolve_precision(t.precision, t.accelerator),
        enable_progress_bar=_progress_bar(t.progress_bar),
        enable_model_summary=False,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        callbacks=cbs,
        default_root_dir=str(run_dir),
    )
    return L.Trainer(**kwargs)


_QUIET = (
    r".*isinstance\(treespec, LeafSpec\)",  # torch/lightning pytree deprecation
    r".*Using `DistributedSampler` with the dataloaders. During `trainer.test\(\)`",  # we de-duplicate
    r".*The number of training batches .* is smaller than the logging interval",
    r".*torch.distributed.nn.functional.all_gather is deprecated",
    r".*does not have many workers which may be a bottleneck",
)


class _DropAdverts(logging.Filter):
    """Drops Lightning's advertisement lines (e.g. its "Tip: ... litlogger ..." on every Trainer):
    nothing a user of this engine can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg).lower()


_LIGHTNING_RANK_ZERO = "lightning.pytorch.utilities.rank_zero"


def _quiet_warnings() -> None:
    for pattern in _QUIET:
        warnings.filterwarnings("ignore", message=pattern)
    lg = logging.getLogger(_LIGHTNING_RANK_ZERO)
    if not any(isinstance(f, _DropAdverts) for f in lg.filters):
        lg.addFilter(_DropAdverts())


def _stage_dir(run_dir: Path, idx: int, stage: Stage, staged: bool) -> Path:
    return run_dir / "stages" / f"{idx}_{stage.name}" if staged else run_dir


def _set_trainable(model, stage: Stage) -> dict:
    """Freeze per the model's frozen pretrained parts and the stage; returns a summary."""
    model.unfreeze()
    names = [n for n, _ in model.named_parameters()]
    for key in ("frozen", "trainable"):
        for pat in getattr(stage, key) or []:
            if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                raise ValueError(f"stage {stage.name!r}: {key} pattern {pat!r} matches no parameter of "
                                 f"{model.model_name} (names look like {', '.join(names[:3])}, ...)")
    frozen = [p.module + ".*" for p in model.pretrained_parts().values() if p.frozen]
    frozen += list(stage.frozen or [])
    if frozen:
        model.freeze(frozen)
    patterns = stage.trainable
    if patterns is not None:
        for name, p in model.named_parameters():
            if not any(fnmatch.fnmatchcase(name, pat) for pat in patterns):
                p.requires_grad_(False)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    return {"trainable_params": n_train, "frozen_params": n_all - n_train, "frozen_modules": list(model.frozen_modules)}


def fit(
    config: Config | Mapping,
    *,
    resume: bool | None = None,
    callbacks: Sequence[L.Callback] = (),
    datamodule=None,
    fold: int | None = None,
    verbose: bool = True,
) -> dict:
    """Train ``config`` (all its stages); return the results dict (also ``<run_dir>/results.json``).

    ``resume``: ``None`` follows ``output.resume`` (``auto``: continue from the checkpoints when
    present: finished stages are skipped, the current one continues from its ``last.ckpt``),
    ``True`` requires something to resume, ``False`` starts afresh. ``config``: the typed
    :class:`~audet.engine.schema.Config` or a resolved config dict (checked and converted here, once).
    """
    from audet.models.checkpoint import init_from_checkpoint, load_weights
    from audet.engine.task import build_model
    from audet.models.base import load_pretrained_parts

    _quiet_warnings()
    config = as_config(config)
    run_dir = run_dir_of(config)
    fresh = resume is False or (resume is None and str(config.output.resume).lower() == "false")
    folder_state = check_run_dir(config, fresh)  # before anything is written: a run of another config is refused
    seed = int(config.seed or 0)
    stages, staged = config.stage_list(), bool(config.stages)
    L.seed_everything(seed, workers=True, verbose=False)
    if config.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    # the data first (no dataset is built yet), then the model ONCE from what the data says
    inner = build_datamodule(config, fold=fold) if datamodule is None else datamodule
    on_test = config.selection.on_test
    data = FitData(inner, seed=seed, on_test=on_test)
    info = data.data_info(dataset=config.data.dataset)
    L.seed_everything(seed, workers=True, verbose=False)
    model = build_model(config, info.aus, data=info)
    pretrained = load_pretrained_parts(model)
    if datamodule is None:
        # the model's crop, normalisation and clip (a data.clip that disagrees is refused)
        inner.use_preprocess(model.preprocess, model=model.model_name)
        info.clip = inner.clip  # what the data serves: the model's clip (+ data.clip's windows/pad)
    data.setup("fit")
    aus = data.aus
    monitor, selection_label = monitor_of(config, data.has_val)
    if on_test:
        warnings.warn("selection.on_test=true: the best epoch is chosen ON THE TEST FOLD (the published habit); "
                      "results are optimistic and labelled so", stacklevel=2)
    labels, mask = data.training_labels()
    ctx = model.loss_context(info, labels, mask)
    seen = {"dataset": info.dataset, "synthetic": False}  # recorded in every checkpoint ("trained_on")
    if config.data.root:
        from audet.data.meta import trained_on

        seen = trained_on(config.data.root)

    setting = str(config.output.resume).lower() if resume is None else ("true" if resume else "false")
    dirs = [_stage_dir(run_dir, i, st, staged) for i, st in enumerate(stages)]
    done = [setting != "false" and staged and _stage_done(d) for d in dirs]
    ckpts = [d / "checkpoints" / "last.ckpt" if setting != "false" and (d / "checkpoints" / "last.ckpt").is_file()
             else None for d in dirs]
    if setting == "true" and resume and not any(done) and not any(ckpts):
        raise FileNotFoundError(f"--resume: no {dirs[0] / 'checkpoints' / 'last.ckpt'} to resume from")
    resuming = any(done) or any(ckpts)

    init_report = None
    if config.model.init_from:
        init_report = init_from_checkpoint(model, config.model.init_from, strict_trunk=config.model.init_strict_trunk)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()} if staged else None
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        from audet.utils.manifest import write_manifest

        if folder_state == "fresh":
            _clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(run_dir, run_inputs(config), command="train", paths={"run_dir": str(run_dir)})
        write_text_atomic(run_dir / "config.yaml", dump_config(config.to_dict()))
        if init_report is not None and not resuming:
            write_json_atomic(run_dir / "init_map.json", _init_summary(init_report))
            if verbose:
                log.info(_init_text(init_report))
        for name, st in pretrained.items():
            if st.startswith("random") and verbose:
                log.warning(f"WARNING: {name}: {st} (allow_random_pretrained)")

    stage_results: list[dict] = []
    task = trainer = export = None
    for idx, stage in enumerate(stages):
        sdir = dirs[idx]
        if done[idx]:
            stage_results.append(json.loads((sdir / "stage.json").read_text()))
            if verbose:
                log.info(f"stage {stage.name}: finished earlier ({sdir}); not rerun")
            continue
        trainable = _set_trainable(model, stage)
        model.on_stage_start(stage.name)
        ckpt_path = ckpts[idx]
        if ckpt_path is None and staged:  # the stage's initial weights
            if stage.init == "previous":
                load_weights(model, dirs[idx - 1] / "last.safetensors")
            elif stage.init == "none":
                model.load_state_dict(initial)
            else:
                init_from_checkpoint(model, stage.init, strict_trunk=config.model.init_strict_trunk)
        stage_seed = seed + 1009 * idx
        if idx > 0:
            L.seed_everything(stage_seed, workers=True, verbose=False)
        clip = config.trainer.gradient_clip_val if stage.gradient_clip_val == "inherit" else stage.gradient_clip_val
        labels_only = stage.labels_only
        stage_trainer = dataclasses.replace(config.trainer, max_epochs=stage.epochs,
                                            gradient_clip_val=None if stage.collect_only else clip)
        if labels_only:  # no validation pass; the stage keeps its last epoch
            stage_trainer = dataclasses.replace(stage_trainer, limit_val_batches=0)
        data.collect_only = stage.collect_only
        data.labels_only = _labels_keys(model, stage) if labels_only else None
        data.frames = bool(stage.frames)
        task = AUTask(config, model, ctx, val_names=data.val_names, optim=stage.optim,
                      collect_only=stage.collect_only, seed=stage_seed, labels_only=labels_only)
        extra = {**({"stage": stage.name, "stage_index": idx} if staged else {}), "trained_on": seen}
        export = ExportCheckpoints(sdir, config.to_dict(), None if labels_only else monitor, config.selection.mode,
                                   "none (labels-only stage: the last epoch)" if labels_only else selection_label,
                                   extra=extra)
        trainer = build_trainer(dataclasses.replace(config, trainer=stage_trainer), sdir, [export, *callbacks])
        if trainer.is_global_zero and verbose:
            if staged:
                log.info(f"== stage {idx}: {stage.name} ({stage.epochs} epoch(s)"
                         f"{', collect only' if stage.collect_only else ''}; {trainable['trainable_params']:,} "
                         f"trainable, {trainable['frozen_params']:,} frozen parameters) ==")
            if ckpt_path is not None:
                log.info(f"resuming from {ckpt_path}")
        data.resume_epoch = _resume_epoch(ckpt_path) if ckpt_path else 0
        trainer.fit(task, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
        res = {"name": stage.name, "index": idx, "epochs": int(trainer.current_epoch),
               "collect_only": stage.collect_only, "labels_only": labels_only, "optim": stage.optim.name,
               "best_epoch": export.best_epoch, "best_score": export.best_score, "history": export.history,
               "run_dir": str(sdir), **trainable}
        stage_results.append(res)
        if staged and trainer.is_global_zero:
            write_json_atomic(sdir / "stage.json", {**res, "done": True})
        trainer.strategy.barrier("audet-stage-end")
    data.collect_only = False
    data.labels_only = None
    data.frames = False

    last_stage = stage_results[-1]
    if staged and (trainer is None or trainer.is_global_zero):
        for which in ("best", "last"):  # the run's checkpoints are the final stage's
            for suffix in (".safetensors", ".json"):
                src = dirs[-1] / f"{which}{suffix}"
                if src.is_file():
                    shutil.copyfile(src, run_dir / f"{which}{suffix}")
    if trainer is None:  # every stage finished earlier: test with a fresh trainer
        task = AUTask(config, model, ctx, val_names=data.val_names)
        trainer = build_trainer(config, dirs[-1], [], enable_logging=False)
    results: dict[str, Any] = {
        "name": config.name,
        "model": config.model.name,
        "aus": aus,
        "recipe": config.recipe,
        "f1_convention": config.selection.f1_convention,
        "selection": {"monitor": monitor, "on": selection_label, "on_test": on_test,
                      "best_epoch": last_stage["best_epoch"], "best_score": last_stage["best_score"]},
        "epochs": int(last_stage["epochs"]),
        "history": last_stage["history"],
        "run_dir": str(run_dir),
        "val_subjects": data.subjects("val"),
        "test_subjects": data.subjects("test"),
        "data_info": {"subjects": info.num_subjects, "train_subjects": info.num_train_subjects,
                      "train_frames": info.label_stats.get("n_frames"), "clip": info.clip},
        "pretrained": dict(model.pretrained_status),
    }
    if staged:
        results["stages"] = stage_results
    if init_report is not None:
        results["init_from"] = _init_summary(init_report)
    if config.selection.test_after_fit and config.data.test_root:
        results["test"] = _test_other_root(config, trainer, run_dir, results)
    elif config.selection.test_after_fit and _has_test(inner):
        results["test"] = _test_best_and_last(task, trainer, data, run_dir)
    if trainer.is_global_zero:
        from audet.engine.reports import write_run_report

        write_run_report(run_dir, results)
        if verbose:
            from audet.engine.reports import summary_text

            log.info(summary_text(results))
    return results


def _resume_epoch(ckpt_path: Path) -> int:
    """The epoch a run resumed from ``ckpt_path`` starts with (checkpoints are written at epoch ends)."""
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    return int(ck.get("epoch", -1)) + 1


def _labels_keys(model, stage: Stage) -> tuple[str, ...]:
    """The batch keys of a ``labels_only`` stage: ``model.batch_keys(name)`` (it must declare them)."""
    from audet.engine.data import LABEL_KEYS

    keys = model.batch_keys(stage.name)
    if keys is None:
        raise ValueError(f"stage {stage.name!r} is labels_only, but {model.model_name} does not declare which batch "
                         f"keys that stage needs (AUModel.batch_keys returns None: the full batch, images included)")
    keys = tuple(keys)
    missing = [k for k in keys if k not in LABEL_KEYS]
    if missing:
        raise ValueError(f"stage {stage.name!r} is labels_only, but {model.model_name}.batch_keys asks for "
                         f"{missing}; a labels-only batch has only {', '.join(LABEL_KEYS)} (no image is read)")
    return keys


def _stage_done(stage_dir: Path) -> bool:
    p = stage_dir / "stage.json"
    try:
        return p.is_file() and bool(json.loads(p.read_text()).get("done"))
    except json.JSONDecodeError:
        return False


def _has_test(inner) -> bool:
    return bool(getattr(inner, "test_prefix", None)) or hasattr(inner, "test_dataloader")


def _test_best_and_last(task: AUTask, trainer: L.Trainer, data: FitData, run_dir: Path) -> dict:
    from audet.models.checkpoint import load_weights
    from audet.engine.evaluate import stored_thresholds

    out = {}
    data.inner.setup("test")
    task.test_name = "test"
    for which in ("best", "last"):
        path = run_dir / f"{which}.safetensors"
        trainer.strategy.barrier(f"audet-test-{which}")
        if not path.is_file():
            continue
        load_weights(task.model, path)
        task.results.pop("test", None)
        meta = json.loads((run_dir / f"{which}.json").read_text())
        thr = stored_thresholds(meta, task.aus)  # chosen on the validation pass, never on the test fold
        task.thresholds = {"test": thr} if thr is not None else {}
        trainer.test(task, dataloaders=data.test_dataloader(), verbose=False)
        task.thresholds = {}
        res = task.results.get("test")
        if res is not None:
            out[which] = {**res, "epoch": meta.get("epoch")}
    return out


def _test_other_root(config: Config, trainer: L.Trainer, run_dir: Path, results: dict) -> dict:
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
        d = config.data
        r = evaluate(path, d.test_root, d.test_prefix, batch_size=d.eval_batch_size or d.batch_size,
                     num_workers=d.num_workers)
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
