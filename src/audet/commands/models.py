"""``audet models [PATTERN]``: list the registered models."""
from __future__ import annotations

import argparse

HELP = "list the registered models (names usable as model.name)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob pattern, e.g. 'ac2d*'")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each model's metadata")


def run(args) -> int:
    from audet.models import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        print(f"no registered model matches {args.pattern!r}")
        return 1
    width = max(len(n) for n in names)
    for n in names:
        info = model_info(n)
        desc = info.get("variant") or info.get("description") or ""
        paper = info.get("paper", "")
        if isinstance(paper, str) and len(paper) > 40:
            paper = paper[:37] + "..."
        print(f"{n:<{width}}  {desc}" + (f"  [{paper}]" if paper else ""))
        if args.verbose:
            for k, v in sorted(info.items()):
                if k not in ("variant", "description"):
                    print(f"{'':<{width}}    {k}: {v}")
    return 0
