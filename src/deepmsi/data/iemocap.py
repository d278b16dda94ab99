"""IEMOCAP: the ``IEMOCAP_full_release`` tree or the community pickle (``cosmic_iemocap.pkl``).

Tree layout (``PATH`` is ``IEMOCAP_full_release`` or its parent)::

    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt
        [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[...]
    Session{1..5}/dialog/transcriptions/<dialog>.txt
        Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
    Session{1..5}/sentences/wav/<dialog>/<utterance>.wav
    Session{1..5}/dialog/avi/DivX/<dialog>.avi

The standard ERC protocol: the 6 classes of IEMOCAP-6 with excited kept apart from happy; the
other annotations (xxx, oth, sur, fea, dis) are outside the set and dropped, not errors. Session 5
is test; the dev split is ~10% of the Session 1-4 dialogues, chosen by a stable hash of the
dialogue name (see ``held_out_groups``) so it is the same on every machine.

Video is the dialogue recording cut by ``start``/``end``; audio is the utterance's own wav.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

from deepmsi.data.common import ProblemLog, drop_duplicate_ids, has_undecodable, held_out_groups
from deepmsi.data.records import SPLITS, Dataset, Utterance
from deepmsi.data.safe_pickle import load_plain_pickle
from deepmsi.errors import DataError
from deepmsi.labels import IEMOCAP6, LabelSet

log = logging.getLogger(__name__)

TEST_SESSION = 5
DEV_FRACTION = 0.1
_EMO_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)")
_TRANSCRIPT_LINE = re.compile(r"^(\S+)\s+\[[\d.]+\s*-\s*[\d.]+\]:\s?(.*)$")
_UTTERANCE_IDS_JSON = "erc7433_utterance_ids.json"


def read_iemocap(path: Path, *, problems: ProblemLog, labels: LabelSet | None = None) -> Dataset:
    """Read the release tree or, for a ``.pkl`` file, the community pickle."""
    if path.is_file():
        return read_iemocap_pickle(path, problems=problems, labels=labels)
    return read_iemocap_tree(path, problems=problems, labels=labels)


# --- the IEMOCAP_full_release tree ----------------------------------------------------------


def read_iemocap_tree(
    root: Path, *, problems: ProblemLog, labels: LabelSet | None = None
) -> Dataset:
    label_set = labels or IEMOCAP6
    if not (root / "Session1").is_dir() and (root / "IEMOCAP_full_release").is_dir():
        root = root / "IEMOCAP_full_release"
    sessions = sorted(p for p in root.glob("Session*") if p.is_dir() and p.name[7:].isdigit())
    if not sessions:
        raise DataError(root, "no Session1..5 folders (expected IEMOCAP_full_release)")

    dialogues: dict[str, list[Utterance]] = {}
    session_of: dict[str, int] = {}
    dropped: Counter[str] = Counter()
    for session in sessions:
        emo_files = sorted((session / "dialog" / "EmoEvaluation").glob("*.txt"))
        for emo_file in emo_files:
            if emo_file.name.startswith("._"):
                continue
            dialog = emo_file.stem
            utts = _read_dialogue(
                session, dialog, emo_file, label_set=label_set, problems=problems, dropped=dropped
            )
            if utts:
                dialogues[dialog] = utts
                session_of[dialog] = int(session.name[7:])
    if dropped:
        log.info(
            "left out %d utterances outside %s: %s",
            sum(dropped.values()),
            label_set.name,
            dict(dropped.most_common()),
        )

    train_dialogues = [d for d in dialogues if session_of[d] != TEST_SESSION]
    dev = set(held_out_groups(train_dialogues, DEV_FRACTION)) if len(train_dialogues) > 1 else set()
    utterances = []
    for dialog, utts in dialogues.items():
        split = (
            "test" if session_of[dialog] == TEST_SESSION else "dev" if dialog in dev else "train"
        )
        utterances += [_with_split(u, split) for u in utts]
    utterances.sort(key=lambda u: (SPLITS.index(u.split), u.dialogue_id, u.turn))
    utterances = drop_duplicate_ids(utterances, problems, root)
    return Dataset("iemocap", label_set, utterances, problems.problems)


def _with_split(utt: Utterance, split: str) -> Utterance:
    return Utterance(**{**utt.__dict__, "split": split})


def _read_dialogue(
    session: Path,
    dialog: str,
    emo_file: Path,
    *,
    label_set: LabelSet,
    problems: ProblemLog,
    dropped: Counter[str],
) -> list[Utterance]:
    """The labelled utterances of one dialogue, in time order (the split is set later)."""
    entries = []
    for line in emo_file.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _EMO_LINE.match(line)
        if match:
            start, end, uid, raw = match.groups()
            entries.append((float(start), float(end), uid, raw))
    texts, bad_text = _read_transcript(session / "dialog" / "transcriptions" / f"{dialog}.txt")
    video = session / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
    video_path = video if video.is_file() else None
    wav_dir = session / "sentences" / "wav" / dialog

    utterances: list[Utterance] = []
    for start, end, uid, raw in sorted(entries):
        label = label_set.canonical(raw)
        if label is None:
            dropped[raw] += 1
            continue
        if uid in bad_text:
            transcript = session / "dialog" / "transcriptions" / f"{dialog}.txt"
            problems.add(transcript, f"transcript of {uid} is not valid UTF-8", uid)
            continue
        wav = wav_dir / f"{uid}.wav"
        utterances.append(
            Utterance(
                id=uid,
                dialogue_id=dialog,
                turn=len(utterances),
                speaker=_speaker(uid),
                text=texts.get(uid) or None,
                label=label,
                split="train",
                video=video_path,
                audio=wav if wav.is_file() else None,
                start=start,
                end=end,
            )
        )
    return utterances


def _read_transcript(path: Path) -> tuple[dict[str, str], set[str]]:
    """utterance id -> text, and the ids whose line is not valid UTF-8."""
    if not path.is_file():
        return {}, set()
    texts, bad = {}, set()
    for line in path.read_bytes().decode("utf-8", errors="surrogateescape").splitlines():
        match = _TRANSCRIPT_LINE.match(line.strip())
        if match:
            uid, text = match.groups()
            texts[uid] = text.strip()
            if has_undecodable(text):
                bad.add(uid)
    return texts, bad


def _speaker(utterance_id: str) -> str:
    """``Ses01F_impro01_M002`` -> ``Ses01M``: the session's actor of that gender."""
    gender = utterance_id.rsplit("_", 1)[-1][:1]
    return utterance_id[:5] + gender


# --- the community pickle ----------------------------------------------------------------


def read_iemocap_pickle(
    path: Path, *, problems: ProblemLog, labels: LabelSet | None = None
) -> Dataset:
    """The COSMIC/DialogueRNN pickle: text and labels only (indices in IEMOCAP-6 order).

    Utterance ids and timings come from ``erc7433_utterance_ids.json`` next to the pickle when
    present; otherwise ids are ``<dialogue>_<turn:03d>``.
    """
    label_set = labels or IEMOCAP6
    speakers, label_ids, sentences, split_ids = _load_pickle(path)
    names = _utterance_names(path.parent / _UTTERANCE_IDS_JSON)
    utterances = []
    for split, dialogue_ids in split_ids:
        for dialog in dialogue_ids:
            ids = names.get(dialog)
            if ids is not None and len(ids) != len(label_ids[dialog]):
                ids = None
            rows = zip(speakers[dialog], label_ids[dialog], sentences[dialog], strict=True)
            for turn, (spk, idx, text) in enumerate(rows):
                idx = int(idx)
                uid = ids[turn] if ids else f"{dialog}_{turn:03d}"
                raw = IEMOCAP6.names[idx] if 0 <= idx < len(IEMOCAP6) else str(idx)
                label = label_set.canonical(raw)
                if label is None:
                    problems.add(path, f"unknown label {raw!r} (not in {label_set.name})", uid)
                    continue
                utterances.append(
                    Utterance(
                        id=uid,
                        dialogue_id=dialog,
                        turn=turn,
                        speaker=dialog[:5] + str(spk),
                        text=str(text).strip() or None,
                        label=label,
                        split=split,
                    )
                )
    utterances = drop_duplicate_ids(utterances, problems, path)
    return Dataset("iemocap", label_set, utterances, problems.problems)


def _load_pickle(path: Path):
    # The community file is a Python 2 pickle of plain lists and dicts: read it as data only, so
    # a crafted file cannot run code (a global it names is refused, never called).
    data = load_plain_pickle(path)
    if not (isinstance(data, (list, tuple)) and len(data) == 6):
        raise DataError(path, "unrecognised pickle layout (expected the 6-item cosmic_iemocap.pkl)")
    speakers, labels, sentences, train, test, valid = data
    if not all(isinstance(d, dict) for d in (speakers, labels, sentences)):
        raise DataError(path, "unrecognised pickle layout (items 1-3 must be dicts)")
    split_ids = [("train", list(train)), ("dev", list(valid)), ("test", list(test))]
    for _, ids in split_ids:
        for dialog in ids:
            if dialog not in labels or not (
                len(speakers[dialog]) == len(labels[dialog]) == len(sentences[dialog])
            ):
                raise DataError(path, f"dialogue {dialog!r} has inconsistent lengths or no labels")
    return speakers, labels, sentences, split_ids


def _utterance_names(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {d: [u["utt_id"] for u in v["utterances"]] for d, v in data.items()}
    except (ValueError, KeyError, TypeError) as err:
        log.warning("%s: ignoring unreadable utterance ids (%s)", path, err)
        return {}
