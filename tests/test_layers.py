"""The package's layers: every import of a lemario module points down (or within its own room), and no module
imports itself through others. Read from the source with ast, so imports inside functions count too.

    core <- games <- data <- model <- control <- play <- flywheel | baselines | web <- analysis <- status <- cli

Rooms of one layer never import each other: flywheel, baselines and web, and one game and another (games/mario,
games/push, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lemario"
LAYERS = {
    "core": 0,
    "games": 1,
    "data": 2,
    "model": 3,
    "control": 4,
    "play": 5,
    "flywheel": 6,
    "baselines": 6,
    "web": 6,
    "analysis": 7,
    "status": 8,
    "cli": 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The lemario modules a file imports (`from lemario.x import y` names module lemario.x.y when that is one)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lemario")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lemario"):
            assert node.level == 0, f"{path}: relative import; lemario uses absolute imports"
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            out |= subs or {node.module}
    return out


def room(module: str) -> tuple[int, str]:
    """(layer, room) of a module: the room is the subpackage below lemario (and the game, for games)."""
    parts = module.split(".")[1:]
    if not parts:  # lemario/__init__.py: the version, below everything
        return 0, "core"
    top = parts[0]
    if top not in LAYERS:
        raise AssertionError(f"{module} is in no layer: add its folder to LAYERS in {__file__}")
    return LAYERS[top], ".".join(parts[:2]) if top == "games" and len(parts) > 1 else top


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    return {m: imports_of(p, set(files)) - {m} for m, p in files.items()}


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in g.items():
        layer, own = room(m)
        for d in deps:
            d_layer, d_room = room(d)
            package_init = m.split(".")[:-1] == d.split(".")  # a package's __init__ is not imported for its content
            if d_layer > layer or (d_layer == layer and d_room != own and not package_init):
                bad.append(f"{m} imports {d}")
    return sorted(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_every_import_points_down():
    assert upward_imports(graph()) == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle():
    g = {
        "lemario.core.a": {"lemario.play.b"},
        "lemario.play.b": {"lemario.core.a"},
        "lemario.flywheel.c": {"lemario.baselines.d"},
        "lemario.baselines.d": set(),
        "lemario.games.mario.e": {"lemario.games.push.f"},
        "lemario.games.push.f": set(),
    }
    assert upward_imports(g) == [
        "lemario.core.a imports lemario.play.b",
        "lemario.flywheel.c imports lemario.baselines.d",
        "lemario.games.mario.e imports lemario.games.push.f",
    ]
    assert cycles(g) == [["lemario.core.a", "lemario.play.b"]]


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_module_size(path):
    """One concept per module: at most 400 lines, no function over 60."""
    text = path.read_text()
    assert len(text.splitlines()) <= 400
    long = [
        f"{n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for n in ast.walk(ast.parse(text))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60
    ]
    assert long == []
