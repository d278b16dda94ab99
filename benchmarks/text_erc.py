"""Text emotion recognition in conversation on MELD and IEMOCAP: research script.

Two stages, each cached under artifacts/text_erc/ so nothing is recomputed:

1. ``finetune``: fine-tune MiniLM on "speaker: utterance [SEP] previous turns (newest first)",
   mean-pooling the target utterance's tokens; the epoch is chosen on dev; the chosen encoder's
   pooled embeddings [N, 384] and logits for every utterance are saved as ``ft_<tag>.npz``.
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
import copy
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import results
import torch
from text_baseline import ARTIFACTS, Corpus, frozen_embeddings, load_corpus, model_dir, scores

from deepmsi.models.context import ContextConfig, DialogueContext, pad_dialogues, speaker_indices

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


def build_inputs(corpus: Corpus, past: int, future: int = 0) -> list[tuple[str, str]]:
    """(target, context) pairs for every utterance in corpus order.

    target = "speaker: text"; context = the ``past`` previous turns newest first (so truncation
    drops the oldest), then, when ``future`` > 0, " || " and the next turns in order.
    """
    pairs = []
    for d in corpus.dialogues:
        turns = [f"{s}: {t}" for s, t in zip(d.speakers, d.texts, strict=True)]
        for i, target in enumerate(turns):
            ctx = " | ".join(reversed(turns[max(0, i - past) : i]))
            if future:
                nxt = " | ".join(turns[i + 1 : i + 1 + future])
                ctx = f"{nxt} || {ctx}" if nxt else ctx
            pairs.append((target, ctx))
    return pairs


class TextClassifier(torch.nn.Module):
    """MiniLM top layers + mean pooling over the target segment's tokens + linear head.

    The bottom ``frozen_layers`` layers (and the embeddings) stay frozen and their outputs are
    computed once (:meth:`lower`), so each training step only runs the top layers: on a shared
    2-core CPU that is what makes fine-tuning with long context inputs affordable.

    forward(hidden [B, L, 384] lower-layer states, attention_mask [B, L], segment_a [B, L])
    -> (pooled [B, 384], logits [B, K])
    """

    def __init__(self, num_classes: int, frozen_layers: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        from transformers import AutoModel

        self.encoder = AutoModel.from_pretrained(model_dir())
        self.frozen_layers = frozen_layers
        for p in self.encoder.embeddings.parameters():
            p.requires_grad_(False)
        for layer in self.encoder.encoder.layer[:frozen_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, num_classes)

    def _mask(self, hidden, attention_mask):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    @torch.inference_mode()
    def lower(self, input_ids, attention_mask, token_type_ids):
        """Frozen part: embeddings + bottom layers -> hidden [B, L, 384]."""
        was = self.training
        self.eval()
        h = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = self._mask(h, attention_mask)
        for layer in self.encoder.encoder.layer[: self.frozen_layers]:
            h = layer(h, mask)
        self.train(was)
        return h

    def forward(self, hidden, attention_mask, segment_a):
        mask = self._mask(hidden, attention_mask)
        for layer in self.encoder.encoder.layer[self.frozen_layers :]:
            hidden = layer(hidden, mask)  # [B, L, 384]
        # Pool the target utterance only (segment A); the context reaches it through attention.
        m = segment_a.unsqueeze(-1).float()  # [B, L, 1]
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # [B, 384]
        return pooled, self.head(self.drop(pooled))


def _batches(lengths: np.ndarray, batch_size: int, shuffle: bool, rng: np.random.Generator):
    """Length-bucketed batches: shuffle, sort inside chunks of 50 batches, shuffle the batches."""
    idx = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    chunk = batch_size * 50
    out = []
    for i in range(0, len(idx), chunk):
        part = idx[i : i + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    if shuffle:
        rng.shuffle(out)
    return out


def _encode_all(model, states, idx: np.ndarray, batch_size: int = 64):
    model.eval()
    pooled_all = np.zeros((len(idx), model.head.in_features), np.float32)
    logits_all = np.zeros((len(idx), model.head.out_features), np.float32)
    lengths = np.array([len(states[i][0]) for i in idx])
    with torch.inference_mode():
        for b in _batches(lengths, batch_size, False, np.random.default_rng(0)):
            pooled, logits = model(*_collate(states, idx[b]))
            pooled_all[b] = pooled.numpy()
            logits_all[b] = logits.numpy()
    return pooled_all, logits_all


def _collate(states, rows: np.ndarray):
    """Pad cached lower-layer states: -> hidden [B, L, 384], attention_mask [B, L], seg_a [B, L]."""
    n = max(len(states[r][0]) for r in rows)
    hidden = torch.zeros(len(rows), n, states[rows[0]][0].shape[1])
    att = torch.zeros(len(rows), n, dtype=torch.long)
    seg = torch.zeros(len(rows), n, dtype=torch.bool)
    for i, r in enumerate(rows):
        h, a = states[r]
        hidden[i, : len(h)] = h.float()
        att[i, : len(h)] = 1
        seg[i, : len(h)] = a
    return hidden, att, seg


def lower_states(model: TextClassifier, enc: dict, batch_size: int = 64) -> list:
    """Per example (hidden [L_i, 384] fp16, segment-A mask [L_i]) from the frozen layers."""
    from tqdm import tqdm

    states: list = [None] * len(enc["lengths"])
    order = np.argsort(enc["lengths"], kind="stable")
    for i in tqdm(range(0, len(order), batch_size), desc="frozen layers", mininterval=30):
        rows = order[i : i + batch_size]
        n = int(enc["lengths"][rows].max())
        feed = {}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            arr = np.zeros((len(rows), n), np.int64)
            for j, r in enumerate(rows):
                arr[j, : len(enc[key][r])] = enc[key][r]
            feed[key] = torch.from_numpy(arr)
        h = model.lower(**feed)  # [B, n, 384]
        for j, r in enumerate(rows):
            length = int(enc["lengths"][r])
            seg = torch.as_tensor(enc["token_type_ids"][r]) == 0  # [L_i]
            states[r] = (h[j, :length].half().clone(), seg)
    return states


def cached_lower_states(model: TextClassifier, enc: dict, path: Path) -> list:
    """:func:`lower_states`, saved to ``path`` (fp16) so a re-run skips the frozen layers."""
    if path.exists():
        return torch.load(path)
    states = lower_states(model, enc)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    torch.save(states, path)
    return states


def finetune(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    seed_all(args.seed)
    corpus = load_corpus(args.corpus)
    tag = args.tag or f"ft_{args.corpus}_p{args.past}" + (f"_f{args.future}" if args.future else "")
    out_path = ARTIFACTS / f"{tag}.npz"
    pairs = build_inputs(corpus, args.past, args.future)
    tok = AutoTokenizer.from_pretrained(model_dir())
    enc = tok(
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        truncation="longest_first",  # trims the longer side (usually the context) first
        max_length=args.max_len,
    )
    enc = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    enc["lengths"] = np.array([len(x) for x in enc["input_ids"]])
    splits = np.array([d.split for d in corpus.dialogues for _ in d.texts])
    labels = np.array([y for d in corpus.dialogues for y in d.labels])
    tr, dv = np.where(splits == "train")[0], np.where(splits == "dev")[0]
    log.info("%s: %d pairs, mean length %.1f tokens", tag, len(pairs), enc["lengths"].mean())

    model = TextClassifier(len(corpus.label_names), frozen_layers=args.frozen_layers)
    t0 = time.time()
    key = f"states_{args.corpus}_p{args.past}_f{args.future}_L{args.max_len}_k{args.frozen_layers}"
    states = cached_lower_states(model, enc, ARTIFACTS / f"{key}.pt")
    lower_s = time.time() - t0
    log.info("frozen layers: %.0f s", lower_s)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {
            "params": [
                p
                for n, p in model.named_parameters()
                if p.requires_grad and not n.endswith(no_decay)
            ],
            "weight_decay": 0.01,
        },
        {
            "params": [
                p for n, p in model.named_parameters() if p.requires_grad and n.endswith(no_decay)
            ],
            "weight_decay": 0.0,
        },
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    steps = args.epochs * int(np.ceil(len(tr) / args.batch_size))
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    best: tuple[float, int, dict] | None = None
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.time()
        total = 0.0
        batches = _batches(enc["lengths"][tr], args.batch_size, True, rng)
        for i, b in enumerate(batches):
            rows = tr[b]
            _, logits = model(*_collate(states, rows))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels[rows]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            total += loss.item()
            if i % 50 == 0:
                log.info("epoch %d step %d/%d loss %.4f", epoch, i, len(batches), total / (i + 1))
        train_s = time.time() - t0
        _, dev_logits = _encode_all(model, states, dv)
        dev = scores(labels[dv], dev_logits.argmax(1))
        history.append({"epoch": epoch, "train_s": round(train_s, 1), **dev})
        log.info("epoch %d: %.0f s, dev wF1 %.2f acc %.2f", epoch, train_s, *dev.values())
        if best is None or dev["weighted_f1"] > best[0]:
            best = (dev["weighted_f1"], epoch, copy.deepcopy(model.state_dict()))
    assert best is not None
    model.load_state_dict(best[2])
    from safetensors.torch import save_file

    save_file(best[2], str(ARTIFACTS / f"{tag}.safetensors"))
    pooled, logits = _encode_all(model, states, np.arange(len(pairs)))
    np.savez(out_path, emb=pooled, logits=logits)
    te = np.where(splits == "test")[0]
    record(
        {
            "stage": "finetune",
            "tag": tag,
            "corpus": args.corpus,
            "past": args.past,
            "future": args.future,
            "max_len": args.max_len,
            "frozen_layers": args.frozen_layers,
            "lower_s": round(lower_s, 1),
            "lr": args.lr,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "best_epoch": best[1],
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
    best = (-1.0, 0, {})
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
        f1 = scores(labels, probs.argmax(1))["weighted_f1"]
        if f1 > best[0]:
            best = (f1, epoch, copy.deepcopy(model.state_dict()))
    return best


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
    name = f"text_erc.{args.corpus}.{args.features}-{args.mode}-{args.kind}"
    results.record(
        results.Row(f"{name}.{metric}", dataset, "t", metric, test[metric],
                    results.command_line(), note=note)
        for metric in ("weighted_f1", "accuracy")
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ft = sub.add_parser("finetune", help="fine-tune MiniLM with previous turns as context")
    ft.add_argument("--corpus", choices=("meld", "iemocap"), required=True)
    ft.add_argument("--past", type=int, default=8, help="previous turns in the input")
    ft.add_argument("--future", type=int, default=0, help="next turns in the input (offline)")
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
