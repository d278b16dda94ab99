"""The public surface: a few names at the package root, a light import, and the house boundaries
(model, layer and loss code never touches files, codecs, the data package, the web or the CLI)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import deepmsi

SRC = Path(deepmsi.__file__).parent
PURE = ["models", "nn", "losses.py", "config.py", "labels.py", "metrics.py"]
FORBIDDEN = (
    "deepmsi.data",
    "deepmsi.cli",
    "deepmsi.serve",
    "av",
    "cv2",
    "fastapi",
    "uvicorn",
    "os",
    "pathlib",
    "shutil",
    "io",
    "csv",
    "json",
    "pickle",
)


@pytest.mark.parametrize("name", deepmsi._EXPORTS)
def test_every_public_name_resolves(name):
    assert getattr(deepmsi, name) is not None


def test_public_names_survive_importing_every_module():
    """A submodule named like an export would replace it on the package once imported
    (``deepmsi.prepare`` the module instead of the function); modules are named apart."""
    code = (
        "import importlib, pkgutil, deepmsi\n"
        "for m in pkgutil.walk_packages(deepmsi.__path__, 'deepmsi.'):\n"
        "    if m.name not in ('deepmsi.__main__', 'deepmsi.serve'):\n"
        "        importlib.import_module(m.name)\n"
        "import inspect\n"
        "print([n for n in deepmsi._EXPORTS if inspect.ismodule(getattr(deepmsi, n))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute"):
        deepmsi.not_a_thing  # noqa: B018


def test_import_is_light():
    heavy = "{'torch', 'av', 'cv2', 'transformers'}"
    code = f"import sys, deepmsi, deepmsi.cli; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _pure_files():
    for entry in PURE:
        path = SRC / entry
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("path", list(_pure_files()), ids=lambda p: str(p.relative_to(SRC)))
def test_model_code_never_touches_files(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("open", "print"):
            pytest.fail(f"{path.name} calls {node.func.id}() at line {node.lineno}")
    bad = {m for m in imported for f in FORBIDDEN if m == f or m.startswith(f + ".")}
    assert not bad, f"{path.name} imports {sorted(bad)}"
