"""Text emotion recognition in conversation on MELD and IEMOCAP: research script.

Two stages, each cached under artifacts/text_erc/ so nothing is recomputed:

1. ``finetune``: fine-tune MiniLM on "speaker: utterance [SEP] previous turns (newest first)",
   mean-pooling the target utterance's tokens; the epoch is chosen on dev. The recipe is the
   library's :func:`deepmsi.features.finetune.finetune_text` (what ``deepmsi prepare
   --finetune-text`` runs); the chosen encoder is saved as a model folder ``<tag>/`` and its
   pooled embeddings [N, 384] and logits for every utterance as ``<tag>.npz``.
2. ``context``: a :class:`deepmsi.models.context.DialogueContext` over those embeddings (or the
   frozen ones), causal ("online", past turns only) or bidirectional ("offline", whole dialogue);
   the epoch is chosen on dev per seed, seeds are ensembled by averaging probabilities, and the
   ensemble is scored once on test.

    nice -n 5 .venv/bin/python benchmarks/text_erc.py finetune --corpus iemocap --past 8
    .venv/bin/python benchmarks/text_erc.py context --corpus iemocap --features ft_iemocap_p8 \
        --mode online --seeds 0,1,2,3,4

Every run appends one JSON line to artifacts/text_erc/runs.jsonl; ``context --record`` also
writes its rows to benchmarks/results.json and RESULTS.md through ``results.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time

import numpy as np
import results
import torch
from text_baseline import ARTIFACTS, Corpus, frozen_embeddings, load_corpus, scores

from deepmsi.data.records import Dataset, Utterance
from deepmsi.labels import LabelSet
from deepmsi.models.context import ContextConfig, DialogueContext, pad_dialogues, speaker_indices
from deepmsi.selection import BestOnDev

log = logging.getLogger("text_erc")
SPLITS = ("train", "dev", "test")


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def record(entry: dict) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    entry = {"date": time.strftime("%Y-%m-%d %H:%M"), **entry}
    with open(ARTIFACTS / "runs.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    log.info("RESULT %s", json.dumps(entry))


# ----------------------------------------------------------------------------- fine-tuning


def corpus_dataset(corpus: Corpus) -> Dataset:
    """The corpus as a deepmsi ``Dataset``, utterances in corpus order (ids "<dialogue>#<turn>")."""
    utterances = [
        Utterance(f"{d.id}#{i}", d.id, i, speaker, text, corpus.label_names[y], d.split)
        for d in corpus.dialogues
        for i, (speaker, text, y) in enumerate(zip(d.speakers, d.texts, d.labels, strict=True))
    ]
    return Dataset(corpus.name, LabelSet(corpus.name, corpus.label_names), utterances)


def finetune(args: argparse.Namespace) -> None:
    """:func:`deepmsi.features.finetune.finetune_text` on the corpus; the encoder folder goes to
    ``<tag>/`` and every utterance's pooled vector and logits to ``<tag>.npz``."""
    from deepmsi.features.finetune import FinetuneOptions, finetune_text

    corpus = load_corpus(args.corpus)
    dataset = corpus_dataset(corpus)
    tag = args.tag or f"ft_{args.corpus}_p{args.past}"
    folder = ARTIFACTS / tag
    if folder.exists():  # a re-run trains again, as it always did
        shutil.rmtree(folder)
    options = FinetuneOptions(
        base="minilm",
        past=args.past,
        max_len=args.max_len,
        frozen_layers=args.frozen_layers,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    key = f"states_{args.corpus}_p{args.past}_f0_L{args.max_len}_k{args.frozen_layers}"
    result = finetune_text(
        dataset, folder, options, states_cache=ARTIFACTS / f"{key}.pt", predict_all=True
    )
    rows = {uid: i for i, uid in enumerate(result.ids)}
    index = np.array([rows[u.id] for u in dataset.utterances])  # every utterance has text
    pooled, logits = result.embeddings[index], result.logits[index]
    np.savez(ARTIFACTS / f"{tag}.npz", emb=pooled, logits=logits)
    splits = np.array([u.split for u in dataset.utterances])
    labels = np.array([y for d in corpus.dialogues for y in d.labels])
    dv, te = np.where(splits == "dev")[0], np.where(splits == "test")[0]
    history = [
        {
            "epoch": h.epoch,
            "train_s": h.seconds,
            "weighted_f1": 100 * h.dev_weighted_f1,
            "accuracy": 100 * h.dev_accuracy,
        }
        for h in result.history
    ]
    record(
        {
            "stage": "finetune",
            "tag": tag,
            "corpus": args.corpus,
            "past": args.past,
            "max_len": args.max_len,
            "frozen_layers": args.frozen_layers,
            "lower_s": round(result.lower_seconds, 1),
            "lr": args.lr,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "best_epoch": result.best_epoch,
            "history": history,
            "dev": scores(labels[dv], logits[dv].argmax(1)),
            "test": scores(labels[te], logits[te].argmax(1)),
        }
    )


# ----------------------------------------------------------------------------- dialogue context


def load_features(corpus: Corpus, names: str) -> np.ndarray:
    """Per-utterance features [N, D] in corpus order: "frozen", a fine-tune tag, or "a+b"."""
    parts = []
    for name in names.split("+"):
        if name == "frozen":
            parts.append(frozen_embeddings(corpus.texts()))
        elif name.endswith(":logits"):
            parts.append(np.load(ARTIFACTS / f"{name[:-7]}.npz")["logits"])
        else:
            parts.append(np.load(ARTIFACTS / f"{name}.npz")["emb"])
    return np.concatenate(parts, axis=1).astype(np.float32)


def _dialogue_tensors(corpus: Corpus, feats: np.ndarray):
    out: dict[str, list] = {s: [] for s in SPLITS}
    pos = 0
    for d in corpus.dialogues:
        n = len(d.texts)
        out[d.split].append(
            (torch.from_numpy(feats[pos : pos + n]), speaker_indices(d.speakers), d.labels)
        )
        pos += n
    return out


def _predict(model: DialogueContext, dialogues) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    with torch.inference_mode():
        x, spk, mask = pad_dialogues([d[0] for d in dialogues], [d[1] for d in dialogues])
        probs = model(x, spk, mask).softmax(-1)[mask].numpy()  # [N, K]
    labels = np.array([y for d in dialogues for y in d[2]])
    return probs, labels


def train_context(cfg: ContextConfig, data, seed: int, args) -> tuple[float, int, dict]:
    """Train one seed; returns (best dev wF1, best epoch, state dict at that epoch)."""
    seed_all(seed)
    model = DialogueContext(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    train = data["train"]
    selection = BestOnDev(keep_weights=True)
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = np.random.permutation(len(train))
        for i in range(0, len(order), args.batch_size):
            batch = [train[j] for j in order[i : i + args.batch_size]]
            x, spk, mask = pad_dialogues([d[0] for d in batch], [d[1] for d in batch])
            y = torch.full(mask.shape, -100, dtype=torch.long)
            for k, d in enumerate(batch):
                y[k, : len(d[2])] = torch.as_tensor(d[2])
            logits = model(x, spk, mask)  # [B, T, K]
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        probs, labels = _predict(model, data["dev"])
        selection.update(epoch, scores(labels, probs.argmax(1))["weighted_f1"], model=model)
    selection.restore(model)
    return selection.best_score, selection.best_epoch, model.state_dict()


def context(args: argparse.Namespace) -> None:
    corpus = load_corpus(args.corpus)
    feats = load_features(corpus, args.features)
    data = _dialogue_tensors(corpus, feats)
    cfg = ContextConfig(
        input_dim=feats.shape[1],
        num_classes=len(corpus.label_names),
        hidden=args.hidden,
        kind=args.kind,
        causal=args.mode == "online",
        layers=args.layers,
        dropout=args.dropout,
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    dev_probs, test_probs, per_seed = [], [], []
    t0 = time.time()
    for seed in seeds:
        f1, epoch, state = train_context(cfg, data, seed, args)
        model = DialogueContext(cfg)
        model.load_state_dict(state)
        p_dev, y_dev = _predict(model, data["dev"])
        p_test, y_test = _predict(model, data["test"])
        dev_probs.append(p_dev)
        test_probs.append(p_test)
        per_seed.append({"seed": seed, "epoch": epoch, "dev_weighted_f1": round(f1, 2)})
        log.info("seed %d: best epoch %d dev wF1 %.2f", seed, epoch, f1)
    dev = scores(y_dev, np.mean(dev_probs, 0).argmax(1))
    test = scores(y_test, np.mean(test_probs, 0).argmax(1))
    record(
        {
            "stage": "context",
            "corpus": args.corpus,
            "features": args.features,
            "mode": args.mode,
            "kind": args.kind,
            "hidden": args.hidden,
            "layers": args.layers,
            "dropout": args.dropout,
            "lr": args.lr,
            "epochs": args.epochs,
            "seeds": seeds,
            "per_seed": per_seed,
            "seconds": round(time.time() - t0, 1),
            "dev": dev,
            "test": test,
        }
    )
    if args.record:
        record_rows(args, seeds, per_seed, dev, test)


def record_rows(args: argparse.Namespace, seeds: list[int], per_seed: list[dict], dev, test):
    """Rows for benchmarks/results.json: the seed ensemble's test weighted F1 and accuracy."""
    dataset = "MELD test (2610)" if args.corpus == "meld" else "IEMOCAP test, Session 5 (1623)"
    mode = "whole dialogue (offline)" if args.mode == "offline" else "past turns only (online)"
    goal = "goal 63 reached" if test["weighted_f1"] >= 63 else "goal 63 not reached"
    epochs = ", ".join(str(p["epoch"]) for p in per_seed)
    note = (
        f"{goal}. {args.kind.upper()} context over {args.features} MiniLM utterance vectors, "
        f"{mode}; {len(seeds)} seeds (epochs {epochs} chosen on dev), probabilities averaged; "
        f"ensemble dev wF1 {dev['weighted_f1']:.2f}"
    )
    commands = []
    for tag in args.features.split("+"):
        entry = finetune_entry(tag)
        if entry is None:
            continue
        commands.append(finetune_command(entry))
        note += (
            f". {tag}: {entry['frozen_layers']} of 6 layers frozen, {entry['past']} past turns, "
            f"lr {entry['lr']}, {entry['epochs']} epochs, epoch {entry['best_epoch']} chosen on "
            f"dev (wF1 {entry['dev']['weighted_f1']:.2f}); its own head alone: test wF1 "
            f"{entry['test']['weighted_f1']:.2f}"
        )
    command = " && ".join([*commands, results.command_line()])
    name = f"text_erc.{args.corpus}.{args.features}-{args.mode}-{args.kind}"
    results.record(
        results.Row(f"{name}.{metric}", dataset, "t", metric, test[metric], command, note=note)
        for metric in ("weighted_f1", "accuracy")
    )


def finetune_entry(tag: str) -> dict | None:
    """The newest ``finetune`` record of ``tag`` in runs.jsonl (None: not a fine-tune tag)."""
    path = ARTIFACTS / "runs.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    found = [e for e in entries if e["stage"] == "finetune" and e["tag"] == tag]
    return found[-1] if found else None


def finetune_command(entry: dict) -> str:
    """The command that made a fine-tune record (its options are all in the record)."""
    return (
        f"nice -n 5 .venv/bin/python benchmarks/text_erc.py finetune --corpus {entry['corpus']} "
        f"--past {entry['past']} --max-len {entry['max_len']} --frozen-layers "
        f"{entry['frozen_layers']} --lr {entry['lr']} --epochs {entry['epochs']} --batch-size "
        f"{entry['batch_size']} --seed {entry['seed']} --tag {entry['tag']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ft = sub.add_parser("finetune", help="fine-tune MiniLM with previous turns as context")
    ft.add_argument("--corpus", choices=("meld", "iemocap"), required=True)
    ft.add_argument("--past", type=int, default=8, help="previous turns in the input")
    ft.add_argument("--max-len", type=int, default=128)
    ft.add_argument("--epochs", type=int, default=4)
    ft.add_argument("--frozen-layers", type=int, default=4, help="bottom layers kept frozen")
    ft.add_argument("--lr", type=float, default=5e-5)
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--tag", default=None)
    ft.set_defaults(run=finetune)
    cx = sub.add_parser("context", help="dialogue context model over utterance embeddings")
    cx.add_argument("--corpus", choices=("meld", "iemocap"), required=True)
    cx.add_argument("--features", default="frozen", help='"frozen", a fine-tune tag, or "a+b"')
    cx.add_argument("--mode", choices=("online", "offline"), required=True)
    cx.add_argument("--kind", choices=("gru", "transformer"), default="gru")
    cx.add_argument("--hidden", type=int, default=128)
    cx.add_argument("--layers", type=int, default=1)
    cx.add_argument("--dropout", type=float, default=0.3)
    cx.add_argument("--lr", type=float, default=1e-3)
    cx.add_argument("--weight-decay", type=float, default=1e-2)
    cx.add_argument("--epochs", type=int, default=40)
    cx.add_argument("--batch-size", type=int, default=8, help="dialogues per batch")
    cx.add_argument("--seeds", default="0,1,2")
    cx.add_argument("--record", action="store_true", help="record rows in results.json")
    cx.set_defaults(run=context)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    args.run(args)


if __name__ == "__main__":
    main()
