"""Subtitle parsing: SRT and WebVTT as real files write them, and clear errors for broken times."""

from __future__ import annotations

import pytest

from deepmsi.data.subtitles import Cue, parse_subtitles, read_subtitles
from deepmsi.errors import DataError

SRT = """1
00:00:01,000 --> 00:00:02,500
<i>Hello</i> there.

2
00:00:03,250 --> 00:00:05,000
{\\an8}I can't <b>believe</b> it
you did that &amp; left.

3
01:02:03,004 --> 01:02:04,000
Late line
"""

VTT = """WEBVTT - a title

NOTE this is a comment
spanning lines

STYLE
::cue { color: yellow }

intro
00:01.000 --> 00:02.500 align:start position:10%
<v Roger>Hello <c.loud>there</c>.

00:00:03.250 --> 00:00:05.000
I can't <00:00:04.000>believe it

1:02:03.004 --> 1:02:04.000
Late line
"""

EXPECTED = [
    Cue(1.0, 2.5, "Hello there."),
    Cue(3.25, 5.0, "I can't believe it you did that & left."),
    Cue(3723.004, 3724.0, "Late line"),
]


def test_srt_cues_times_and_clean_text():
    assert parse_subtitles(SRT, fmt="srt") == EXPECTED


def test_vtt_skips_header_notes_styles_and_settings():
    cues = parse_subtitles(VTT, fmt="vtt")
    assert [(c.start, c.end) for c in cues] == [(c.start, c.end) for c in EXPECTED]
    assert cues[0].text == "Hello there."
    assert cues[1].text == "I can't believe it"
    assert [c.speaker for c in cues] == ["Roger", None, None]  # the <v Roger> voice tag


def test_bom_crlf_and_sniffing(tmp_path):
    srt = tmp_path / "a.srt"
    srt.write_bytes(b"\xef\xbb\xbf" + SRT.replace("\n", "\r\n").encode())
    assert read_subtitles(srt) == EXPECTED
    vtt = tmp_path / "b.subs"  # unknown extension: sniffed from the WEBVTT header
    vtt.write_bytes(("\ufeff" + VTT).replace("\n", "\r\n").encode())
    assert [c.start for c in read_subtitles(vtt)] == [c.start for c in EXPECTED]


def test_latin1_file_still_reads(tmp_path):
    path = tmp_path / "old.srt"
    path.write_bytes("1\n00:00:01,000 --> 00:00:02,000\nCafé\n".encode("latin-1"))
    assert read_subtitles(path)[0].text == "Café"


def test_missing_blank_line_between_cues():
    text = "1\n00:00:01,000 --> 00:00:02,000\nfirst\n2\n00:00:03,000 --> 00:00:04,000\nsecond\n"
    assert parse_subtitles(text) == [Cue(1.0, 2.0, "first"), Cue(3.0, 4.0, "second")]


def test_missing_numbers_and_extra_blank_lines():
    text = "\n\n00:00:01,000 --> 00:00:02,000\nfirst\n\n\n\n00:00:03,000 --> 00:00:04,000\nsecond"
    assert [c.text for c in parse_subtitles(text)] == ["first", "second"]


@pytest.mark.parametrize(
    ("text", "line", "token"),
    [
        ("1\n00:00:01,000 --> 00:0x:02,000\nhi\n", 2, "00:0x:02,000"),
        ("1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\n00:00:61,000 --> 00:00:62,000\nyo\n", 6, "61"),
        ("1\n00:00:01,000 -->\nhi\n", 2, "''"),
    ],
)
def test_bad_timestamp_names_file_and_line(tmp_path, text, line, token):
    path = tmp_path / "bad.srt"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_subtitles(path)
    message = str(err.value)
    assert message.startswith(str(path)) and f"line {line}:" in message and token in message


def test_cue_ending_before_it_starts():
    with pytest.raises(DataError, match="line 2: cue ends"):
        parse_subtitles("1\n00:00:05,000 --> 00:00:02,000\nhi\n", source="x.srt")


def test_text_without_timing_and_empty_files():
    with pytest.raises(DataError, match="line 1: expected a timing line"):
        parse_subtitles("just some words\n", source="x.srt")
    with pytest.raises(DataError, match="no subtitle cues"):
        parse_subtitles("\ufeff\r\n\r\n", source="x.srt")
    with pytest.raises(DataError, match="must start with 'WEBVTT'"):
        parse_subtitles("00:01.000 --> 00:02.000\nhi\n", source="x.vtt", fmt="vtt")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read subtitles"):
        read_subtitles(tmp_path / "nope.srt")
