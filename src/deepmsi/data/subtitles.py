"""Subtitle files (SRT, WebVTT) as timed cues: how a long video is cut into utterances.

Each cue becomes one segment to classify, and its text is that segment's transcript. Real files
are messy (a byte-order mark, Windows line ends, ``<i>`` and ``{\\an8}`` styling, missing cue
numbers), so parsing is lenient about layout and strict about times: a timestamp that cannot be
read raises ``DataError`` naming the file and the line.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from deepmsi.errors import DataError

__all__ = ["Cue", "parse_subtitles", "read_subtitles"]

# [hh:]mm:ss(,|.)fff; SRT uses a comma and always has hours, WebVTT a dot and may omit hours.
_TIME = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?$")
_TAG = re.compile(r"<[^>]*>")  # <i>, </b>, <font ...>, <v Speaker>, <c.loud>, <00:01.000>
_ASS = re.compile(r"\{\\[^}]*\}")  # {\an8}, {\i1}
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]+)>")  # WebVTT voice span: <v Roger>, <v.loud Ann>
_VTT_META = ("NOTE", "STYLE", "REGION")


@dataclass(frozen=True)
class Cue:
    """One subtitle: a time span in seconds, its plain text (styling removed) and who speaks
    (a WebVTT ``<v Name>`` voice tag; None when the cue does not say)."""

    start: float
    end: float
    text: str
    speaker: str | None = None


def read_subtitles(path: str | Path) -> list[Cue]:
    """Cues of an ``.srt`` or ``.vtt`` file, in file order.

    The format follows the extension; any other extension is sniffed from a ``WEBVTT`` header.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read subtitles: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # NOTE: legacy SRT files are often Windows-1252; latin-1 never fails and keeps ASCII.
        text = raw.decode("latin-1")
    suffix = path.suffix.lower()
    fmt = "vtt" if suffix == ".vtt" else "srt" if suffix == ".srt" else None
    return parse_subtitles(text, source=str(path), fmt=fmt)


def parse_subtitles(text: str, *, source: str = "<subtitles>", fmt: str | None = None) -> list[Cue]:
    """Cues of SRT or WebVTT text; ``fmt`` is "srt", "vtt" or None to sniff the header.

    ``source`` names the input in errors (``DataError(source, "line N: ...")``).
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if fmt is None:
        fmt = "vtt" if lines and lines[0].strip().startswith("WEBVTT") else "srt"
    if fmt not in ("srt", "vtt"):
        raise ValueError(f"unknown subtitle format {fmt!r}; expected 'srt' or 'vtt'")
    if fmt == "vtt" and not (lines and lines[0].strip().startswith("WEBVTT")):
        raise DataError(source, "line 1: a WebVTT file must start with 'WEBVTT'")

    cues: list[Cue] = []
    for number, block in _blocks(lines):
        if fmt == "vtt" and number == 1:
            continue  # the WEBVTT header block
        if fmt == "vtt" and block[0].split(" ", 1)[0].split("\t", 1)[0] in _VTT_META:
            continue
        cues.extend(_parse_block(block, number, source))
    if not cues:
        raise DataError(source, "no subtitle cues found")
    return cues


def _blocks(lines: list[str]) -> list[tuple[int, list[str]]]:
    """Blank-line separated blocks as (1-based line number of the first line, lines)."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 0
    for i, line in enumerate(lines, start=1):
        if line.strip():
            if not current:
                start = i
            current.append(line.rstrip())
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def _parse_block(block: list[str], first_line: int, source: str) -> list[Cue]:
    """Cues of one block: optional id line, a ``start --> end`` line, then text lines.

    A timing line inside the text starts a new cue, so a file that forgot the blank line between
    two cues still reads (the number line just before it is taken as the next cue's id).
    """
    timings = [i for i, line in enumerate(block) if "-->" in line]
    if not timings:
        if len(block) == 1 and block[0].strip().isdigit():
            return []  # a stray cue number with nothing else
        raise DataError(source, f"line {first_line}: expected a timing line 'start --> end'")
    if timings[0] > 1:
        raise DataError(source, f"line {first_line + 1}: text before the timing line")
    cues = []
    for k, at in enumerate(timings):
        stop = timings[k + 1] if k + 1 < len(timings) else len(block)
        text = block[at + 1 : stop]
        if k + 1 < len(timings) and text and text[-1].strip().isdigit():
            text = text[:-1]  # the next cue's number
        cues.append(_cue(block[at], first_line + at, text, source))
    return cues


def _cue(timing: str, line_no: int, text: list[str], source: str) -> Cue:
    left, _, right = timing.partition("-->")
    start = _seconds(left.strip(), line_no, source)
    end_token = right.strip().split()[0] if right.strip() else ""  # VTT settings follow the time
    end = _seconds(end_token, line_no, source)
    if end < start:
        raise DataError(source, f"line {line_no}: cue ends ({end_token}) before it starts")
    voice = next((m.group(1).strip() for line in text for m in _VOICE.finditer(line)), None)
    return Cue(start, end, _clean(text), voice or None)


def _seconds(token: str, line_no: int, source: str) -> float:
    match = _TIME.match(token)
    if match is None:
        raise DataError(source, f"line {line_no}: bad timestamp {token!r}")
    hours, minutes, seconds, fraction = match.groups()
    if int(minutes) >= 60 or int(seconds) >= 60:
        raise DataError(source, f"line {line_no}: bad timestamp {token!r}")
    frac = float("0." + fraction) if fraction else 0.0
    # rounded to the millisecond the formats carry, so 00:00:02,704 is exactly 2.704
    return round(int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + frac, 3)


def _clean(lines: list[str]) -> str:
    """Cue text as one plain line: tags and ASS overrides dropped, entities decoded."""
    words = " ".join(_ASS.sub("", _TAG.sub("", line)) for line in lines)
    return " ".join(html.unescape(words).split())
