"""``audet train CONFIG [key=value ...]``: train one run (resumes automatically)."""
from __future__ import annotations

import argparse

HELP = "train a model from a config (YAML file or packaged name) with key=value overrides"
DESCRIPTION = """Train one run from a config: a YAML file or a packaged config name
(ac2d_bp4d, ac2d_disfa, ac2d_gft, ac2d_bp4dplus, ac2d_affwild2, ac2d_synth_quick, ...).

Overrides are dotted keys, values parsed as YAML:
  audet train ac2d_bp4d data.root=data/bp4d data.fold=1 optim.lr=1e-3 recipe=code
  audet train ac2d_synth_quick trainer.strategy=ddp trainer.devices=2 trainer.accelerator=cpu

A run continues from OUT/checkpoints/last.ckpt when it exists (output.resume=auto);
--resume requires it, --no-resume starts afresh. OUT/audet-manifest.json records the config that
made the run: a run directory made by another config is refused before anything is written there
(--overwrite starts afresh in it). See docs/training.md."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML file or packaged config name (see `audet train --list`)", nargs="?")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides (optional)")
    p.add_argument("--out", help="run directory (= output.dir; default runs/<name>)")
    from audet.commands._common import add_precision

    add_precision(p, "training precision: 32 | bf16 | 16 (= trainer.precision; default: the config's)", None)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", dest="resume", action="store_true", default=None,
                   help="continue from OUT/checkpoints/last.ckpt (error if absent)")
    g.add_argument("--no-resume", dest="resume", action="store_false", help="start afresh even if last.ckpt exists")
    from audet.commands._common import add_overwrite

    add_overwrite(p, "start afresh in a run directory made by another config (its checkpoints and reports go)")
    p.add_argument("--list", action="store_true", help="list the packaged configs and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args) -> int:
    from audet.commands._common import check_data_root, config_from_args, epoch_lines
    from audet.engine.config import dump_config, packaged_configs

    if args.list:
        print("\n".join(packaged_configs()))
        return 0
    cfg = config_from_args(args)  # the whole config is checked here, before any work
    if args.print_config:
        print(dump_config(cfg), end="")
        print("\n".join(derived_lines(cfg)))
        return 0
    check_data_root(cfg, args)
    from audet.engine.fit import fit

    fit(cfg, resume=False if args.overwrite else args.resume, callbacks=[epoch_lines()])
    return 0


def derived_lines(cfg: dict) -> list[str]:
    """Comment lines under ``--print-config``: the values the engine derives from the config
    (the scaled lr at one process, the warm-up formula, where the best epoch is selected)."""
    from audet.engine.config import get
    from audet.engine.optim import scaled_lr

    o = cfg["optim"]
    bs = int(get(cfg, "data.batch_size"))
    acc = int(get(cfg, "trainer.accumulate_grad_batches") or 1)
    lr = scaled_lr(o["lr"], bs, 1, acc, o.get("scale_lr", True))
    rule = f"{o['lr']:g} x {bs * acc} / 256" if o.get("scale_lr", True) else "not scaled"
    warm = {"linear": "lr (s + 1) / W", "linspace": "lr s / (W - 1), step 0 at lr 0"}[o.get("warmup_formula") or "linear"]
    warmup = f"warm-up {o.get('warmup_epochs'):g} epoch(s) as {warm}" if o.get("warmup_epochs") else "no warm-up"
    out = [(f"# derived (1 process): lr = {rule} = {lr:.6g}; {warmup}; schedule {o.get('schedule')}, "
            f"min_lr {o.get('min_lr'):g}" + ("; each stage overrides its own optim keys" if cfg.get("stages") else ""))]
    if get(cfg, "selection.on_test"):
        out.append("# model selection: TEST-SET SELECTION (selection.on_test=true: per-epoch scores on the test fold, "
                   "best epoch chosen there; optimistic, as in the published code)")
    elif not get(cfg, "data.val_fraction"):
        out.append("# model selection: none (data.val_fraction=0: the last epoch)")
    else:
        out.append(f"# model selection: validation subjects (data.val_fraction={get(cfg, 'data.val_fraction'):g} "
                   "of the training subjects)")
    return out
