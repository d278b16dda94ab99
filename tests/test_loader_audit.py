"""The loader audit (docs/security.md), held by tests: no loader in the package can run code.

A scan of the source finds every call that could deserialise code (``pickle.load``,
``torch.load``, ``numpy.load``, ``from_pretrained``...) and checks its safe form; a model folder
that asks for its own code (an ``auto_map``) is loaded without running it.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import deepmsi

SRC = Path(deepmsi.__file__).parent
SAFE_PICKLE = SRC / "data" / "safe_pickle.py"
# Modules that must never be used on input files: each can run code while loading.
BANNED_MODULES = {"dill", "joblib", "marshal", "shelve", "cloudpickle", "yaml"}


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.expr) -> str:
    """``a.b.c`` for a call's function (the last parts only for complex expressions)."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return "<missing>"


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_audit_scans_the_package():
    assert len(_sources()) > 30 and SAFE_PICKLE in _sources()


def test_no_unrestricted_unpickling():
    found = []
    for path in _sources():
        if path == SAFE_PICKLE:
            continue
        for call in _calls(path):
            name = _name(call.func)
            if name.endswith(("pickle.load", "pickle.loads", "Unpickler")):
                found.append(f"{path.relative_to(SRC)}:{call.lineno} {name}")
    assert found == []


def test_torch_load_is_weights_only():
    seen, bad = 0, []
    for path in _sources():
        for call in _calls(path):
            if _name(call.func) == "torch.load":
                seen += 1
                if _keyword(call, "weights_only") is not True:
                    bad.append(f"{path.relative_to(SRC)}:{call.lineno}")
    assert seen >= 2  # checkpoint.load_state and finetune's cached states
    assert bad == []


def test_numpy_load_never_allows_pickle():
    seen, bad = 0, []
    for path in _sources():
        for call in _calls(path):
            if _name(call.func) in ("np.load", "numpy.load"):
                seen += 1
                if _keyword(call, "allow_pickle") not in ("<missing>", False):
                    bad.append(f"{path.relative_to(SRC)}:{call.lineno}")
    assert seen >= 2
    assert bad == []


def test_from_pretrained_never_trusts_remote_code():
    seen, bad = 0, []
    for path in _sources():
        for call in _calls(path):
            if _name(call.func).endswith("from_pretrained"):
                seen += 1
                if _keyword(call, "trust_remote_code") is not False:
                    bad.append(f"{path.relative_to(SRC)}:{call.lineno}")
    assert seen >= 1
    assert bad == []


def test_no_eval_exec_or_code_loading_modules():
    bad = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in ("eval", "exec", "compile", "__import__"):
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno} {node.func.id}()")
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(SRC)}:{node.lineno} import {n}" for n in names
                    if n.split(".")[0] in BANNED_MODULES]  # fmt: skip
    assert bad == []


def test_model_folder_asking_for_its_own_code_does_not_run_it(tmp_path, monkeypatch):
    """A text encoder folder whose config.json maps AutoModel to a bundled .py: the code is not
    imported (trust_remote_code=False); the standard BERT class is used or loading is refused."""
    pytest.importorskip("transformers")
    from deepmsi.errors import ConfigError
    from deepmsi.features.text import load_pretrained, resolve_text_model

    source = Path(resolve_text_model("minilm"))
    folder = tmp_path / "evil-model"
    folder.mkdir()
    for item in source.iterdir():  # links, not copies: the weights are ~90 MB
        (folder / item.name).symlink_to(item)
    (folder / "config.json").unlink()
    marker = tmp_path / "marker"
    (folder / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "from transformers import BertModel as EvilModel\n"
    )
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "from transformers import BertConfig as EvilConfig\n"
    )
    config = json.loads((source / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModel": "modeling_evil.EvilModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    import sys

    import transformers.dynamic_module_utils as dynamic
    from transformers import AutoModel

    # transformers copies trusted code into a modules cache on sys.path: keep both in tmp_path.
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    # The folder's code is live: a loader that trusts it runs it.
    AutoModel.from_pretrained(str(folder), trust_remote_code=True)
    assert marker.exists(), "the bundled code did not run under trust_remote_code=True"
    marker.unlink()

    try:
        (model,) = load_pretrained("text", str(folder), AutoModel)
    except ConfigError:
        model = None
    assert not marker.exists()
    if model is not None:
        assert type(model).__module__.startswith("transformers.")
