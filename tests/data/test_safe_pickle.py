"""Community pickles are read as plain data: a crafted pickle never runs code.

Each payload is first shown to work (plain ``pickle.load`` writes the marker file), so a test
passing means the safe loader stopped it, not that the payload was harmless.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
from pathlib import Path

import pytest

from deepmsi.cli import main
from deepmsi.data.safe_pickle import ALLOWED_GLOBALS, load_plain_pickle
from deepmsi.data.spec import load_dataset
from deepmsi.errors import DataError


class _Exec:
    """Pickles as ``builtins.exec(code)``: loading it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class _System:
    """Pickles as ``os.system('touch marker')`` (``posix.system`` on Linux)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _cosmic_layout(payload: object) -> list:
    """The 6-item cosmic_iemocap.pkl layout with ``payload`` hidden in one sentence."""
    dialog = "Ses01F_impro01"
    return [{dialog: ["F"]}, {dialog: [2]}, {dialog: [payload]}, [dialog], [], []]


PAYLOADS = {
    "exec-top-level": lambda m: _Exec(m),
    "exec-inside-valid-layout": lambda m: _cosmic_layout(_Exec(m)),
    "os-system-inside-layout": lambda m: _cosmic_layout(_System(m)),
}


def _write(path: Path, obj: object, protocol: int) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_malicious_pickle_never_runs(tmp_path, kind, protocol):
    # The payload is live: an ordinary unpickler runs it.
    probe = tmp_path / "probe-marker"
    live = _write(tmp_path / "live.pkl", PAYLOADS[kind](probe), protocol)
    with live.open("rb") as f:
        pickle.load(f)  # noqa: S301 (proving the payload works)
    assert probe.exists(), "the payload did not fire under plain pickle.load"

    marker = tmp_path / "marker"
    path = _write(tmp_path / "cosmic_iemocap.pkl", PAYLOADS[kind](marker), protocol)
    with pytest.raises(DataError) as err:
        load_dataset(f"iemocap:{path}", on_error="skip")
    message = str(err.value)
    assert not marker.exists()
    assert err.value.path == str(path.resolve())
    assert "refused" in message and "\n" not in message
    # names the global it refused, as the file spells it (protocols < 3 say __builtin__)
    expected = r"(builtins|__builtin__)\.exec" if kind.startswith("exec") else r"posix\.system"
    assert re.search(expected, message), message


def test_inspect_cli_refuses_malicious_pickle(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = _write(tmp_path / "cosmic_iemocap.pkl", _cosmic_layout(_Exec(marker)), 2)
    assert main(["inspect", "--dataset", f"iemocap:{path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(path) in err and "__builtin__.exec" in err


@pytest.mark.parametrize(
    "raw",
    [
        b"cposix\nsystem\n(S'true'\ntR.",  # GLOBAL + REDUCE, hand-written protocol 0
        b"(S'true'\niposix\nsystem\n.",  # INST: the callable named inline
        b"\x80\x02\x82\x01)R.",  # EXT1: a copyreg extension code
        b"\x80\x02X\x01\x00\x00\x00xQ.",  # BINPERSID: a persistent id
    ],
)
def test_every_opcode_that_can_call_is_refused(tmp_path, raw):
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert ops & {"GLOBAL", "INST", "EXT1", "BINPERSID"}
    with pytest.raises(DataError, match="refused|not a readable pickle"):
        load_plain_pickle(_write_raw(tmp_path / "x.pkl", raw))


def _write_raw(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


def test_plain_data_round_trips(tmp_path):
    data = [{"a": [1, 2.5, None, True, -(2**70)]}, ("t", "é" * 3), [], {}]
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        path = _write(tmp_path / f"p{protocol}.pkl", data, protocol)
        assert load_plain_pickle(path) == data
    # From protocol 4 on, bytes and sets have their own opcodes (no global needed).
    data += [b"bytes", {3, 4}, frozenset({5})]
    path = _write(tmp_path / "p5.pkl", data, 5)
    assert load_plain_pickle(path) == data


def test_allow_list_is_empty():
    """Nothing is allowed; an entry added here must come with its own test."""
    assert ALLOWED_GLOBALS == frozenset()


@pytest.mark.parametrize(
    ("rel", "items"), [("iemocap/cosmic_iemocap.pkl", 6), ("meld/cosmic_meld.pkl", 7)]
)
def test_real_community_pickles_are_plain_data(shared_data, rel, items):
    data = load_plain_pickle(shared_data / rel)
    assert isinstance(data, list) and len(data) == items
    assert all(isinstance(d, dict) for d in data[:3])


def test_real_iemocap_pickle_reads(shared_data):
    ds = load_dataset(f"iemocap:{shared_data / 'iemocap' / 'cosmic_iemocap.pkl'}")
    assert len(ds.utterances) == 7433
