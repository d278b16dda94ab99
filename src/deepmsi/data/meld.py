"""MELD: the official ``{train,dev,test}_sent_emo.csv`` plus the MELD.Raw clips where present.

Layout (``DIR`` may hold the CSVs and clip folders directly or one level down, as in
``MELD.Raw/train/train_sent_emo.csv`` and ``MELD.Raw/train/train_splits/``)::

    train_sent_emo.csv   dev_sent_emo.csv   test_sent_emo.csv
    train_splits/dia{D}_utt{U}.mp4
    dev_splits_complete/dia{D}_utt{U}.mp4
    output_repeated_splits_test/dia{D}_utt{U}.mp4

Without clip folders the dataset is text-only. A clip missing from a present folder (the official
release lacks a few) leaves that utterance without audio and video and is logged, not an error.
Dialogue ids restart in every split, so ids carry the split: ``train_dia0_utt3``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from deepmsi.data.common import ProblemLog, drop_duplicate_ids, parse_csv
from deepmsi.data.records import SPLITS, Dataset, Utterance
from deepmsi.errors import DataError
from deepmsi.labels import MELD7, LabelSet

log = logging.getLogger(__name__)

REQUIRED = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
CLIP_DIRS = {
    "train": ("train_splits",),
    "dev": ("dev_splits_complete", "dev_splits"),
    "test": ("output_repeated_splits_test", "test_splits"),
}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm"}


def read_meld(root: Path, *, problems: ProblemLog, labels: LabelSet | None = None) -> Dataset:
    """Read MELD from ``root``; ``labels`` defaults to MELD-7 in the official order."""
    label_set = labels or MELD7
    if not root.is_dir():
        raise DataError(root, "not a directory (meld:DIR expects the folder of *_sent_emo.csv)")
    utterances: list[Utterance] = []
    found = False
    for split in SPLITS:
        csv_path = _find(root, f"{split}_sent_emo.csv", want_dir=False)
        if csv_path is None:
            continue
        found = True
        clips = _clip_index(root, split)
        try:
            utterances += _read_split(csv_path, split, clips, label_set, problems)
        except DataError as err:  # a file-level problem (e.g. a missing column)
            problems.add(err.path, err.problem)
    if not found:
        raise DataError(root, "no MELD annotation files ({train,dev,test}_sent_emo.csv)")
    utterances = drop_duplicate_ids(utterances, problems, root)
    return Dataset("meld", label_set, utterances, problems.problems)


def _find(root: Path, name: str, *, want_dir: bool) -> Path | None:
    """``root/name`` or ``root/*/name`` (one level down, as in MELD.Raw/train/...)."""
    candidates = [root / name] + sorted(root.glob(f"*/{name}"))
    for path in candidates:
        if path.is_dir() if want_dir else path.is_file():
            return path
    return None


def _clip_index(root: Path, split: str) -> dict[str, Path] | None:
    """``dia{D}_utt{U}`` -> clip path for one split, or None when there is no clip folder."""
    for name in CLIP_DIRS[split]:
        folder = _find(root, name, want_dir=True)
        if folder is not None:
            return {
                p.stem: p
                for p in folder.iterdir()
                if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("._")
            }
    return None


def _read_split(
    csv_path: Path,
    split: str,
    clips: dict[str, Path] | None,
    label_set: LabelSet,
    problems: ProblemLog,
) -> list[Utterance]:
    table = parse_csv(csv_path, read_text(csv_path), REQUIRED)
    rows = []
    for row, line in zip(table.rows, table.lines, strict=True):
        try:
            dia, utt = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
        except ValueError:
            ids = f"{row['Dialogue_ID']!r}/{row['Utterance_ID']!r}"
            problems.add(csv_path, f"line {line}: bad Dialogue_ID/Utterance_ID {ids}")
            continue
        uid = f"{split}_dia{dia}_utt{utt}"
        label = label_set.canonical(row["Emotion"])
        if label is None:
            problems.add(csv_path, f"line {line}: {_unknown(row['Emotion'], label_set)}", uid)
            continue
        rows.append((dia, utt, uid, label, row))
    rows.sort(key=lambda r: (r[0], r[1]))

    turns: Counter[int] = Counter()
    utterances, missing = [], 0
    for dia, utt, uid, label, row in rows:
        clip = None
        if clips is not None:
            clip = clips.get(f"dia{dia}_utt{utt}")
            missing += clip is None
        text = fix_mojibake(row["Utterance"]) or None
        utterances.append(
            Utterance(
                id=uid,
                dialogue_id=f"{split}_dia{dia}",
                turn=turns[dia],
                speaker=fix_mojibake(row["Speaker"]),
                text=text,
                label=label,
                split=split,
                video=clip,
                audio=clip,
            )
        )
        turns[dia] += 1
    if clips is None:
        log.info("%s: no %s clip folder found; %s is text-only", csv_path.parent, split, split)
    elif missing:
        log.warning("%s: %d of %d %s utterances have no clip", csv_path, missing, len(rows), split)
    return utterances


def _unknown(raw: str, label_set: LabelSet) -> str:
    return f"unknown label {raw!r} (not in {label_set.name}: {', '.join(label_set.names)})"


def read_text(path: Path) -> str:
    """The CSV's text: UTF-8 when it is, else Windows-1252 (older MELD copies)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.info("%s is not UTF-8; reading it as Windows-1252", path)
        return data.decode("cp1252", errors="replace")


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 text that was decoded as Windows-1252/Latin-1 (``Iâ€™m`` -> ``I’m``).

    MELD's CSVs circulate with such mojibake. The repair is only kept when the characters, read
    back as bytes, form valid UTF-8, so genuine accents (``café``) are left alone.
    """
    if text.isascii():
        return text
    raw = bytearray()
    for ch in text:
        code = ord(ch)
        if code < 256:
            raw.append(code)
            continue
        try:
            raw += ch.encode("cp1252")
        except UnicodeEncodeError:
            return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return text
