"""The import graph of ``audet`` (read from the source with ``ast``, lazy imports included).

Rules (docs/architecture.md): imports run one way, facs/geometry/metrics/losses <- data, models <-
engine <- commands <- cli, and there are no cycles (issue 8: data/prepare had types <-> partition
and runner/worker <-> prepare/__init__).
"""
from __future__ import annotations

import ast
from pathlib import Path

import audet

SRC = Path(audet.__file__).resolve().parent


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = ["audet", *p.relative_to(SRC).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the audet modules it imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    n = a.name
                    while n and n not in mods:
                        n = n.rpartition(".")[0]
                    if n:
                        graph[m].add(n)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m if is_pkg else m.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    target = base + ("." + node.module if node.module else "")
                else:
                    target = node.module or ""
                if target.split(".")[0] != "audet":
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    graph[m].add(sub if sub in mods else target)
        graph[m].discard(m)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_lazy_and_package_imports():
    g = import_graph()
    # a function-level import (audet.data.prepare.prepare_dataset imports the runner lazily)
    assert "audet.data.prepare.runner" in g["audet.data.prepare"]
    assert "audet.data.prepare.release" in g["audet.data.prepare.runner"]


def test_the_package_has_no_import_cycles():
    """Anywhere in audet (issue 21: backends <-> onnx_export, audet -> ... -> models.checkpoint -> audet,
    models <-> models.registry were cycles)."""
    bad = cycles(import_graph())
    assert not bad, f"import cycles: {bad}"


def _string_module_names() -> list[tuple[str, str]]:
    """(module, text) for every string constant (f-string parts too) that names an audet module."""
    mods = _modules()
    out = []
    for m, (path, _) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.rstrip(".")
                if text.startswith("audet.") and " " not in text and (
                        text in mods or any(k.startswith(text + ".") for k in mods)):
                    out.append((m, text))
    return out


def test_no_string_named_imports_across_layers():
    """A module named by a string (importlib, plug-in lists) is invisible to the graph above: only
    a package's own lazy exports may do it (audet.engine/audet.data ``__getattr__``, the release
    readers of audet.data.prepare)."""
    bad = sorted((m, t) for m, t in _string_module_names()
                 if not (t.startswith(m + ".") or t.rpartition(".")[0] == m.rpartition(".")[0]))
    assert not bad, f"modules named by strings across layers: {bad}"
    assert ("audet.data.prepare.landmarks", "audet.inference") not in _string_module_names()


def test_every_command_module_is_registered_by_import():
    """cli's command list is the modules themselves: a misspelt name fails at import, and a command
    module that is not listed fails here."""
    from audet.commands import COMMANDS

    files = {p.stem for p in (SRC / "commands").glob("*.py") if not p.stem.startswith("_")}
    assert {m.__name__.rpartition(".")[2] for m in COMMANDS.values()} == files
    for name, mod in COMMANDS.items():
        assert callable(mod.run) and callable(mod.add_arguments) and mod.HELP, name
    assert "audet.commands.train" in import_graph()["audet.commands"]


def test_prepare_compat_shim_is_gone():
    assert "audet.data.prepare.common" not in import_graph()


def _layer(m: str) -> str:
    return m.split(".")[1] if m.count(".") else m


def test_imports_run_one_way():
    g = import_graph()
    forbidden = {
        "data": {"models", "engine", "commands", "cli"},
        "facs": {"data", "models", "engine", "commands", "cli"},
        "geometry": {"data", "models", "engine", "commands", "cli"},
        "metrics": {"data", "models", "engine", "commands", "cli"},
        "losses": {"data", "models", "engine", "commands", "cli"},
        "models": {"engine", "commands", "cli"},
        "engine": {"commands", "cli"},
        "inference": {"commands", "cli"},
    }
    bad = sorted((m, t) for m, targets in g.items() for t in targets
                 if _layer(t) in forbidden.get(_layer(m), ()))  # fmt: skip
    assert not bad, f"imports against the layering: {bad}"


def test_image_io_writes_nothing():
    """Image decoding does not write list files or datasets (issue 8): the toy writer is data.toy."""
    import audet.data.images as images

    g = import_graph()
    assert not g["audet.data.images"] & {"audet.data.listfile", "audet.utils.io", "audet.data.folds"}
    assert not hasattr(images, "make_toy_prepared")
    assert "audet.data.listfile" in g["audet.data.toy"]


def test_tests_never_skip_on_an_audet_import_error():
    """An import error in audet must fail, not turn into a skip (issue 8)."""
    tests = Path(__file__).resolve().parent
    bad = []
    for p in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            name = getattr(node, "func", None)
            name = getattr(name, "attr", getattr(name, "id", ""))
            if (isinstance(node, ast.Call) and name == "importorskip"
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).split(".")[0] == "audet"):  # fmt: skip
                bad.append(f"{p.name}:{node.lineno}")
    assert not bad, f"importorskip on audet modules: {bad}"
