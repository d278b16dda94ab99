"""Reading community pickles without running code: an unpickler that refuses every global.

A pickle can name any importable callable (``os.system``, ``builtins.exec``) and have it called
while loading; that is how a crafted ``cosmic_iemocap.pkl`` would run code on ``deepmsi inspect``.
Every such callable (for ``REDUCE``, ``BUILD``, ``NEWOBJ``, ``INST``/``OBJ`` and the copyreg
extension codes) reaches the unpickler through ``find_class``, and persistent ids through
``persistent_load``; refusing both leaves only plain data: lists, tuples, dicts, sets, strings,
bytes, numbers, booleans and None. Both real community files (IEMOCAP's and MELD's) are exactly
that, so the allow-list is empty.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from deepmsi.errors import DataError

__all__ = ["ALLOWED_GLOBALS", "RefusedGlobal", "load_plain_pickle"]

# (module, name) pairs a pickle may name. Empty: the community files need none. An entry added
# here needs a test that a file using it loads and that it cannot be turned into a code path.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset()


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside ``ALLOWED_GLOBALS`` (nothing has been called)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
        super().__init__(f"{module}.{name}")


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise RefusedGlobal(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not plain data")


def load_plain_pickle(path: Path, *, encoding: str = "latin1") -> Any:
    """Load a pickle of plain data only, or raise a one-line ``DataError`` naming the file.

    ``encoding`` decodes Python 2 ``str`` objects (the community files are Python 2 pickles).
    A file that names a global is refused with that global's name; nothing in it is called.
    """
    try:
        with path.open("rb") as f:
            return _PlainUnpickler(f, encoding=encoding).load()
    except RefusedGlobal as err:
        raise DataError(
            path,
            f"refused: the pickle needs the global {err} (only plain lists, dicts and strings "
            "are read, so a pickle cannot run code)",
        ) from None
    except Exception as err:  # unpickling fails in many ways; all mean "not this file"
        raise DataError(path, f"not a readable pickle ({type(err).__name__}: {err})") from None
