"""``audet finetune --checkpoint CKPT CONFIG [key=value ...]``: train initialised from a checkpoint."""
from __future__ import annotations

import argparse

HELP = "train a config initialised from a checkpoint, AU branches mapped by AU identity"
DESCRIPTION = """Same as `audet train CONFIG model.init_from=CKPT ...`.

Tensors shared by both models are copied; AU-specific tensors (branches, head rows, prototypes)
are copied for the AUs both AU sets contain (e.g. DISFA AU1,2,4,6,12 <- BP4D AU1,2,4,6,12) and
the other AUs keep their fresh initialisation. The mapping is printed and saved to
OUT/init_map.json."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from audet.commands._common import add_checkpoint, add_precision

    add_checkpoint(p, "an audet .safetensors checkpoint (with its .json)", old_before=("config", "overrides*"))
    p.add_argument("config", help="YAML file or packaged config name")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides (optional), e.g. data.root=DIR")
    p.add_argument("--out", help="run directory (= output.dir; default runs/<name>)")
    add_precision(p, "training precision: 32 | bf16 | 16 (= trainer.precision; default: the config's)", None)
    p.add_argument("--no-strict-trunk", action="store_true",
                   help="keep fresh init for non-AU tensors the checkpoint cannot fill (default: error)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", dest="resume", action="store_true", default=None,
                   help="continue from OUT/checkpoints/last.ckpt (error if absent)")
    g.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start afresh even if last.ckpt exists")
    from audet.commands._common import add_overwrite

    add_overwrite(p, "start afresh in a run directory made by another config")


def run(args) -> int:
    from audet.commands._common import check_checkpoint, check_data_root, config_from_args, epoch_lines
    from audet.engine.fit import fit

    args.overrides = [*(args.overrides or []), f"model.init_from={args.checkpoint}"]
    if args.no_strict_trunk:
        args.overrides.append("model.init_strict_trunk=false")
    cfg = config_from_args(args)  # the whole config is checked here, before any work
    check_checkpoint(args.checkpoint)
    check_data_root(cfg, args)
    fit(cfg, resume=False if args.overwrite else args.resume, callbacks=[epoch_lines()])
    return 0
