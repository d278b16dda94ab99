"""What a dataset holds and what is wrong with it, before any decoding or training.

``inspect_dataset("meld:DIR")`` reads the dataset with its reader and opens the header of every
media file once (a dialogue video shared by many IEMOCAP utterances is probed once), so it finds
missing, empty and unreadable files in seconds where decoding would take hours. A file whose
header is intact but whose data is cut short is only found when it is decoded.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from deepmsi.data.common import ProblemLog, check_on_error
from deepmsi.data.records import Dataset, Utterance
from deepmsi.data.spec import DatasetSpec, load_dataset
from deepmsi.errors import DataError, Problem
from deepmsi.labels import LabelSet
from deepmsi.modalities import NAMES

log = logging.getLogger(__name__)

MAX_LISTED = 20  # problems printed by ``Inventory.table``; ``to_dict`` has them all


@dataclass(frozen=True)
class SplitSummary:
    """Counts for one split; ``labels`` holds every class of the label set, in its order."""

    utterances: int
    dialogues: int
    labels: dict[str, int]

    def to_dict(self) -> dict:
        return {"utterances": self.utterances, "dialogues": self.dialogues, "labels": self.labels}


@dataclass(frozen=True)
class Inventory:
    """What ``inspect_dataset`` found.

    ``modalities`` counts utterances that have each modality: text when the transcript is not
    empty; audio/video when the file exists and (with ``probed``) its header shows that stream.
    """

    dataset: str
    label_set: LabelSet
    splits: dict[str, SplitSummary]
    modalities: dict[str, int]
    problems: list[Problem] = field(default_factory=list)
    probed: bool = True

    @property
    def utterances(self) -> int:
        return sum(s.utterances for s in self.splits.values())

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "label_set": self.label_set.name,
            "splits": {name: s.to_dict() for name, s in self.splits.items()},
            "modalities": dict(self.modalities),
            "media_probed": self.probed,
            "problems": [p.to_dict() for p in self.problems],
        }

    def table(self) -> str:
        """A plain-text table per split (counts per label), then modalities and problems."""
        names = list(self.label_set.names)
        header: list[object] = ["split", "utterances", "dialogues", *names]
        counts = {
            split: [s.utterances, s.dialogues, *(s.labels.get(n, 0) for n in names)]
            for split, s in self.splits.items()
        }
        if len(counts) > 1:
            counts["all"] = [sum(column) for column in zip(*counts.values(), strict=True)]
        rows: list[list[object]] = [[split, *values] for split, values in counts.items()]
        widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=True)]
        lines = [f"dataset {self.dataset} (labels: {self.label_set.name})"]
        for row in [header, *rows]:
            cells = [str(row[0]).ljust(widths[0])]
            cells += [str(v).rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells))
        how = "media headers probed" if self.probed else "files present, not probed"
        have = ", ".join(f"{m} {self.modalities[m]}/{self.utterances}" for m in NAMES)
        lines.append(f"modalities: {have} ({how})")
        lines.append(f"problems: {len(self.problems)}")
        for p in self.problems[:MAX_LISTED]:
            lines.append(f"  {p.file}: {p.error}" + (f" [{p.id}]" if p.id else ""))
        if len(self.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED} more (--json lists all)")
        return "\n".join(lines)


def inspect_dataset(
    spec: str | DatasetSpec | Dataset,
    *,
    on_error: str = "skip",
    probe_media: bool = True,
    labels: LabelSet | str | None = None,
    progress: bool = True,
) -> Inventory:
    """Count utterances, dialogues and labels per split, and which modalities are really there.

    ``spec`` is a ``KIND:PATH`` spec (read with ``load_dataset``) or a ``Dataset`` already read.
    ``on_error="skip"`` lists every problem (the reader's, then one per bad media file);
    ``"raise"`` stops at the first with a ``DataError`` naming the file. ``probe_media=False``
    only checks that media files exist and are not empty. ``labels`` is passed to the reader.
    """
    check_on_error(on_error)
    if isinstance(spec, Dataset):
        dataset = spec
    else:
        dataset = load_dataset(spec, on_error=on_error, labels=labels)
    problems = ProblemLog(on_error)
    problems.problems.extend(dataset.problems)

    splits = {}
    for name in dataset.splits:
        rows = dataset.split(name)
        splits[name] = SplitSummary(
            utterances=len(rows),
            dialogues=len({u.dialogue_id for u in rows}),
            labels=dataset.label_counts(name),
        )
    streams = _check_media(dataset.utterances, problems, probe_media, progress)
    modalities = {
        "text": sum(1 for u in dataset.utterances if u.text),
        "audio": sum(1 for u in dataset.utterances if u.audio is not None and streams[u.audio][0]),
        "video": sum(1 for u in dataset.utterances if u.video is not None and streams[u.video][1]),
    }
    return Inventory(
        dataset.name, dataset.labels, splits, modalities, problems.problems, probed=probe_media
    )


def _check_media(
    utterances: list[Utterance], problems: ProblemLog, probe_media: bool, progress: bool
) -> dict[Path, tuple[bool, bool]]:
    """Media path -> (has audio, has video), each file opened once; bad files are problems."""
    users: dict[Path, list[str]] = defaultdict(list)  # path -> ids of the utterances using it
    for utt in utterances:
        for path in dict.fromkeys(p for p in (utt.audio, utt.video) if p is not None):
            users[path].append(utt.id)
    if probe_media:
        from deepmsi.data.media import probe  # pulls in PyAV
    from deepmsi.progress import progress as progress_bar

    streams = {}
    bar = progress_bar(
        users.items(), desc="probing media", unit="file", enabled=progress and bool(users)
    )
    for path, ids in bar:
        try:
            if probe_media:
                info = probe(path)
                streams[path] = (info.audio, info.video)
            else:
                _check_file(path)
                streams[path] = (True, True)
        except DataError as err:
            streams[path] = (False, False)
            shared = "" if len(ids) == 1 else f" (used by {len(ids)} utterances)"
            problems.add(err.path, err.problem + shared, ids[0] if len(ids) == 1 else None)
    bar.close()
    return streams


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(path, "no such file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
