"""``deepmsi inspect --dataset SPEC``: what a dataset holds (per split, per label, per modality)
and what is wrong with it, as a table or one JSON object."""

from __future__ import annotations

import argparse
import json


def add_labels_option(p: argparse.ArgumentParser) -> None:
    """``--labels SET``, shared by inspect and prepare."""
    p.add_argument(
        "--labels",
        metavar="SET",
        help="a built-in label set (meld7, iemocap6, ravdess8) the labels must belong to; "
        "other labels are problems (default: the smallest built-in set holding every label, "
        "else the labels seen)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="count utterances, labels and modalities; list broken files",
        description="Read a dataset, open the header of every media file, and report utterances, "
        "dialogues and labels per split, the modalities present, and every problem found.",
    )
    p.add_argument(
        "--dataset", required=True, metavar="SPEC", help="meld:DIR, iemocap:PATH or folder:DIR"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="skip",
        help="skip (default): list every problem; raise: stop at the first",
    )
    add_labels_option(p)
    p.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="do not open media files, only check that they exist",
    )


def run(args: argparse.Namespace) -> int:
    from deepmsi.data.inventory import inspect_dataset

    inventory = inspect_dataset(
        args.dataset, on_error=args.on_error, probe_media=args.probe, labels=args.labels
    )
    print(json.dumps(inventory.to_dict(), indent=2) if args.json else inventory.table())
    return 0
