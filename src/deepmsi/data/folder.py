"""The generic layout: a folder of media files described by ``labels.csv``.

Columns: ``file`` (media path relative to the folder) and ``emotion`` are required;
``transcript``, ``speaker`` (or RAVDESS-style ``actor``), ``dialogue_id``, ``utterance_id`` and
``split`` (train/dev/test; val/valid/validation mean dev) are optional.

- Media: audio-only files (wav, flac, mp3, ogg, m4a, ...) give audio; anything else is read as a
  video container giving video and audio from the same file.
- Ids: ``utterance_id``, else the file name without extension (the relative path when two files
  share a name). Without ``dialogue_id`` each utterance is its own one-turn dialogue.
- Labels: unless ``labels=`` is given, the smallest built-in set (IEMOCAP-6, MELD-7, RAVDESS-8)
  holding every label, else a custom set of the labels seen (sorted).
- Splits: without a ``split`` column the split is speaker-independent and deterministic:
  speakers are ranked by a stable hash; the first ``max(1, round(0.1 n))`` are test (when there
  are 2 or more speakers), the next as many are dev (when there are 4 or more), the rest train.
  E.g. RAVDESS's 18 actors give 14/2/2; one speaker gives train only. With no speaker column
  the same is done per dialogue, or per utterance.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from deepmsi.data.common import (
    ProblemLog,
    Table,
    drop_duplicate_ids,
    has_undecodable,
    normalise_split,
    parse_csv,
    rank_groups,
)
from deepmsi.data.records import Dataset, Utterance
from deepmsi.errors import DataError
from deepmsi.labels import IEMOCAP6, MELD7, RAVDESS8, LabelSet

log = logging.getLogger(__name__)

LABELS_CSV = "labels.csv"
REQUIRED = ("file", "emotion")
SPEAKER_COLUMNS = ("speaker", "actor")
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma"}
BUILT_IN = (IEMOCAP6, MELD7, RAVDESS8)
HELD_OUT_FRACTION = 0.1


def read_folder(root: Path, *, problems: ProblemLog, labels: LabelSet | None = None) -> Dataset:
    """Read ``root/labels.csv`` (``root`` may also be the CSV itself)."""
    csv_path = root if root.is_file() else root / LABELS_CSV
    root = csv_path.parent
    if not csv_path.is_file():
        raise DataError(root, f"no {LABELS_CSV} (folder:DIR needs DIR/{LABELS_CSV})")
    table = _read_table(csv_path, problems)
    if table is None:
        return Dataset(root.name, labels or LabelSet.from_labels([]), [], problems.problems)

    speaker_col = next((c for c in SPEAKER_COLUMNS if c in table.columns), None)
    stems = Counter(Path(r["file"]).stem for r in table.rows)
    rows = []  # (row, id, media path)
    for row, line in zip(table.rows, table.lines, strict=True):
        uid = row.get("utterance_id") or _default_id(row["file"], stems)
        problem = _row_problem(table, row, line, root)
        if problem is not None:
            problems.add(problem[0], problem[1], uid)
        else:
            rows.append((row, line, uid))

    label_set = labels or _label_set_for([r["emotion"] for r, _, _ in rows])
    kept = []
    for row, line, uid in rows:
        if label_set.canonical(row["emotion"]) is None:
            names = ", ".join(label_set.names)
            error = (
                f"line {line}: unknown label {row['emotion']!r} (not in {label_set.name}: {names})"
            )
            problems.add(csv_path, error, uid)
        else:
            kept.append((row, uid))

    splits = _derived_splits(kept, speaker_col) if "split" not in table.columns else {}
    turns: Counter[str] = Counter()
    utterances = []
    for row, uid in kept:
        dialogue = row.get("dialogue_id") or uid
        media = root / row["file"]
        is_audio = media.suffix.lower() in AUDIO_SUFFIXES
        split = splits[uid] if splits else normalise_split(row["split"])
        assert split is not None  # rows with an unknown split were problems above
        utterances.append(
            Utterance(
                id=uid,
                dialogue_id=dialogue,
                turn=turns[dialogue],
                speaker=row.get(speaker_col, "") if speaker_col else "",
                text=row.get("transcript") or None,
                label=label_set.canonical(row["emotion"]),
                split=split,
                video=None if is_audio else media,
                audio=media,
            )
        )
        turns[dialogue] += 1
    utterances = drop_duplicate_ids(utterances, problems, csv_path)
    return Dataset(root.name, label_set, utterances, problems.problems)


def _row_problem(
    table: Table, row: dict[str, str], line: int, root: Path
) -> tuple[Path, str] | None:
    """(file, problem) for a row that cannot be used, else None."""
    csv_path = table.path
    bad = [c for c, v in row.items() if has_undecodable(v)]
    if bad:
        return csv_path, f"line {line}: {', '.join(bad)} is not valid UTF-8"
    if line in table.ragged:
        return csv_path, (
            f"line {line}: {table.ragged[line]} fields where the header has "
            f"{len(table.columns)} (a comma in an unquoted value?)"
        )
    if not row["file"]:
        return csv_path, f"line {line}: empty file"
    if not row["emotion"]:
        return csv_path, f"line {line}: empty emotion"
    if "split" in table.columns and normalise_split(row["split"]) is None:
        return csv_path, f"line {line}: unknown split {row['split']!r}"
    media = root / row["file"]
    if not media.is_file():
        return media, "a folder, not a media file" if media.is_dir() else "no such file"
    return None


def _read_table(csv_path: Path, problems: ProblemLog) -> Table | None:
    """The CSV's rows, or None after recording why there are none (no header, a missing column,
    only a header)."""
    text = csv_path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    try:
        table = parse_csv(csv_path, text, REQUIRED)
    except DataError as err:
        problems.add(err.path, err.problem)
        return None
    if not table.rows:
        problems.add(csv_path, f"no rows, only a header ({', '.join(table.columns)})")
        return None
    return table


def _default_id(file: str, stems: Counter[str]) -> str:
    path = Path(file)
    if stems[path.stem] == 1:
        return path.stem
    return path.with_suffix("").as_posix().replace("/", "_")


def _label_set_for(raw_labels: list[str]) -> LabelSet:
    """The smallest built-in set holding every label, else a custom one of the labels seen."""
    for label_set in sorted(BUILT_IN, key=len):
        if all(label_set.canonical(raw) is not None for raw in raw_labels):
            return label_set
    return LabelSet.from_labels(raw_labels)


def _derived_splits(rows: list[tuple[dict, str]], speaker_col: str | None) -> dict[str, str]:
    """utterance id -> split, holding out whole speakers (see the module docstring)."""
    if speaker_col:
        group_of = {uid: row.get(speaker_col, "") for row, uid in rows}
    else:
        log.warning(
            "labels.csv has no speaker column; the derived split is not speaker-independent"
        )
        group_of = {uid: row.get("dialogue_id") or uid for row, uid in rows}
    ranked = rank_groups(group_of.values())
    n = len(ranked)
    k = max(1, round(HELD_OUT_FRACTION * n))
    n_test = k if n >= 2 else 0
    n_dev = k if n >= 4 else 0
    split_of = {g: "test" for g in ranked[:n_test]}
    split_of.update({g: "dev" for g in ranked[n_test : n_test + n_dev]})
    return {uid: split_of.get(group, "train") for uid, group in group_of.items()}
