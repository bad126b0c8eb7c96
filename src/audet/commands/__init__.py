"""Subcommands of the ``audet`` CLI, in the order ``audet --help`` lists them.

One module per subcommand (``HELP``, ``add_arguments(p)``, ``run(args)``; heavy imports inside
``run``). A new command is one module here plus one entry of :data:`COMMANDS`; the modules are
imported by name below, so a misspelt or missing one fails at import (never skipped silently).
"""
from audet.commands import (compare, complexity, convert, cv, demo, evaluate, export, finetune, models, predict,
                            prepare, pretrain_fan, score, synth, train, visualize)

#: command name -> module, in the order ``audet --help`` lists them
COMMANDS = {
    "demo": demo,
    "synth": synth,
    "prepare": prepare,
    "train": train,
    "cv": cv,
    "evaluate": evaluate,
    "score": score,
    "compare": compare,
    "finetune": finetune,
    "complexity": complexity,
    "visualize": visualize,
    "predict": predict,
    "export": export,
    "convert": convert,
    "models": models,
    "pretrain-fan": pretrain_fan,
}
