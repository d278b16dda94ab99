import pytest

from deepmsi.labels import IEMOCAP6, MELD7, RAVDESS8, LabelSet, get_label_set


def test_community_orders():
    assert IEMOCAP6.names == ("happy", "sad", "neutral", "angry", "excited", "frustrated")
    assert [IEMOCAP6.index(c) for c in ("hap", "sad", "neu", "ang", "exc", "fru")] == list(range(6))
    assert MELD7.names == ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
    assert len(RAVDESS8) == 8


def test_aliases_and_unknown():
    assert MELD7.canonical(" Joy ") == "joy"
    assert MELD7.canonical("happy") == "joy"
    assert "calm" not in MELD7
    with pytest.raises(KeyError, match="meld7"):
        MELD7.index("calm")


def test_roundtrip_and_validation():
    assert LabelSet.from_dict(IEMOCAP6.to_dict()) == IEMOCAP6
    assert get_label_set("meld7") is MELD7
    with pytest.raises(ValueError):
        LabelSet("x", ("a", "a"))
    with pytest.raises(ValueError):
        LabelSet("x", ("a",), {"b": "c"})
