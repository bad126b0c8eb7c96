"""Library code logs (``logging``), it does not print; commands/ and cli.py may print for the user."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import audet
from audet.utils.log import console_logging

SRC = Path(audet.__file__).resolve().parent
#: engine/ is being reworked for the model contract (issue 8), which moves its prints to logging.
PENDING: set[str] = set()


def _prints(path: Path) -> list[int]:
    """Line numbers of print() calls outside functions named ``main`` (a ``python -m`` entry point)."""
    lines = []

    def visit(node, in_main=False):
        for child in ast.iter_child_nodes(node):
            main = in_main or (isinstance(child, ast.FunctionDef) and child.name == "main")
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print"
                    and not main):  # fmt: skip
                lines.append(child.lineno)
            visit(child, main)

    visit(ast.parse(path.read_text()))
    return lines


def test_library_code_does_not_print():
    found = {}
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC).as_posix()
        if rel.startswith("commands/") or rel == "cli.py" or rel in PENDING:
            continue
        if lines := _prints(p):
            found[rel] = lines
    assert not found, f"print() in library code (use logging.getLogger(__name__)): {found}"


def test_print_finder_sees_prints(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    print('x')\n\ndef main():\n    print('ok')\n")
    assert _prints(f) == [2]


def test_console_logging_shows_info_on_stdout_then_stops(capsys):
    log = logging.getLogger("audet.data.prepare.runner")
    with console_logging():
        log.info("visible %d", 1)
        log.debug("hidden")
    log.info("after")
    out = capsys.readouterr().out
    assert out == "visible 1\n"
