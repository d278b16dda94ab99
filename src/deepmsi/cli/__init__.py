"""The ``deepmsi`` command: a thin shell over the Python API.

Each sub-command lives in its own module here with two functions, ``add_parser(subparsers)`` and
``run(args) -> int``; ``main`` calls the ``run`` of the module named by the command. Errors a
user can fix (``DeepMSIError``) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from deepmsi.errors import DeepMSIError

# Sub-command name -> module under deepmsi.cli. Imported lazily so `deepmsi --help` stays fast.
COMMANDS = {
    "inspect": "inspect",
    "synth": "synth",
    "prepare": "prepare",
    "train": "train",
    "evaluate": "evaluate",
    "ablate": "ablate",
    "demo": "demo",
    "predict": "predict",
    "export": "export",
    "serve": "serve",
}


def _available() -> dict[str, ModuleType]:
    modules = {}
    for name, mod in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"deepmsi.cli.{mod}")
        except ModuleNotFoundError as err:  # a command not built yet
            if err.name != f"deepmsi.cli.{mod}":
                raise
    return modules


def build_parser(modules: dict[str, ModuleType] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepmsi",
        description="Multimodal emotion recognition (DeepMSI-MER): from clips on disk to a "
        "trained model, honest reports and predictions on your own recordings.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (modules or _available()).values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from deepmsi.runs.card import invoked_as

    modules = _available()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(modules).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        with invoked_as(argv):
            return int(modules[args.command].run(args) or 0)
    except DeepMSIError as err:
        print(f"deepmsi {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepmsi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
