"""The tree reads as the pipeline: every import points down the stages, none in a cycle, and no
function is too long to read in one go. Every import counts, including function-level and
type-checking ones (a cycle hidden in a function body is still a cycle)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import deepmsi

SRC = Path(deepmsi.__file__).parent
MAX_FUNCTION_LINES = 80

# Lower stages never import higher ones. Modules of one stage may import each other (no cycles).
STAGES: list[tuple[str, ...]] = [
    (
        "deepmsi",
        "deepmsi.errors",
        "deepmsi.atomic",
        "deepmsi.progress",
        "deepmsi.modalities",
        "deepmsi.labels",
        "deepmsi.config",
        "deepmsi.metrics",
        "deepmsi.distributed",
        "deepmsi.selection",
    ),
    ("deepmsi.nn",),
    ("deepmsi.pretrained",),  # reads pretrained weights, for models' SwinV2.from_pretrained
    ("deepmsi.models",),
    ("deepmsi.losses",),
    ("deepmsi.data",),
    ("deepmsi.features",),
    ("deepmsi.runs",),
    ("deepmsi.training",),
    ("deepmsi.evaluation",),
    ("deepmsi.inference",),
    ("deepmsi.demo",),
    ("deepmsi.serve",),
    ("deepmsi.cli", "deepmsi.__main__"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _stage(module: str) -> int:
    best = None
    for level, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            if module == prefix or (prefix != "deepmsi" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (level, len(prefix))
    assert best is not None, f"{module} belongs to no stage: add it to STAGES"
    return best[0]


def _resolve(name: str) -> str | None:
    """The package module an import names (``deepmsi.runs.folder.load_run`` -> the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from deepmsi.runs import folder`` imports the module deepmsi.runs.folder
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == "deepmsi" or name.startswith("deepmsi."):
                target = _resolve(name)
                if target:
                    found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        # a package imports its parent package's __init__ implicitly; that is not an edge
        graph[module] = {m for m in _imports(path) if m != module}
    return graph


def test_every_module_has_a_stage():
    for module in MODULES:
        _stage(module)


def test_no_import_points_up_the_stages():
    upward = [
        f"{src} (stage {_stage(src)}) imports {dst} (stage {_stage(dst)})"
        for src, targets in _graph().items()
        for dst in sorted(targets)
        if _stage(dst) > _stage(src)
    ]
    assert not upward, "\n".join(upward)


def test_data_and_features_never_import_training_evaluation_or_inference():
    later = ("deepmsi.runs", "deepmsi.training", "deepmsi.evaluation", "deepmsi.inference")
    bad = [
        f"{src} imports {dst}"
        for src, targets in _graph().items()
        if src.startswith(("deepmsi.data", "deepmsi.features"))
        for dst in targets
        if dst.startswith(later)
    ]
    assert not bad, "\n".join(bad)


def test_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state[nxt] == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state[nxt] == 0 and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if state[module] == 0 and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_an_upward_and_a_hidden_import(tmp_path):
    code = "def f():\n    from deepmsi.training.loop import train\n"
    path = tmp_path / "m.py"
    path.write_text(code)
    assert _imports(path) == {"deepmsi.training.loop"}
    assert _stage("deepmsi.training.loop") > _stage("deepmsi.data.cache")


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_functions_are_short(path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: " + ", ".join(long)
