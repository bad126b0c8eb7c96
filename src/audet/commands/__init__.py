"""Subcommands of the ``audet`` CLI, in the order ``audet --help`` lists them.

A name listed here whose module does not exist yet is skipped.
"""

COMMANDS = [
    "demo",
    "synth",
    "prepare",
    "train",
    "cv",
    "evaluate",
    "finetune",
    "complexity",
    "visualize",
    "predict",
    "export",
    "convert",
    "models",
]
