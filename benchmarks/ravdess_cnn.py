"""Speech emotion on RAVDESS from log-mel spectrograms with a small CNN trained from scratch.

Same protocol as ``ravdess_audio.py`` (6 folds of 3 actors; the next fold's actors are dev and
alone choose the epoch; the test actors are scored once; no pretrained weights; no statistics
of the test speakers). Each clip: 16 kHz mono, silence trimmed by energy, 64 log-mel bands every
20 ms, per-clip mean removed per band (cepstral mean normalisation: uses the clip itself only).
Training: random 3.2-s crops, SpecAugment masks, mixup; test: the whole trimmed clip.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ravdess_cnn.py [--folds 0,1] [--record]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
from ravdess_audio import DATA, FOLDS, GOAL, WORK, make_folds
from results import Row, command_line, record
from torch import nn

log = logging.getLogger("ravdess_cnn")
SR, N_FFT, HOP, MELS, CROP = 16000, 512, 320, 64, 160
SPEC_PATH = WORK / "ravdess_logmel.npz"


def logmel(wave: np.ndarray) -> np.ndarray:
    """[T] float32 -> [MELS, N] log-mel, silence trimmed, per-band mean removed."""
    from deepmsi.features.audio import frame_signal, mel_filterbank

    frames = frame_signal(wave, N_FFT, HOP) * np.hanning(N_FFT).astype(np.float32)  # [N, N_FFT]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [N, N_FFT/2+1]
    mel = power @ mel_filterbank(SR, N_FFT, MELS, 50.0, SR / 2).T  # [N, MELS]
    db = 10 * np.log10(mel + 1e-10)
    energy = db.max(1)
    active = np.flatnonzero(energy > energy.max() - 45)
    db = db[active[0] : active[-1] + 1]
    db = db - db.mean(0, keepdims=True)
    return db.T.astype(np.float32)


def load_specs() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(log-mel per clip, label index [N], actor [N]); computed once, cached in artifacts."""
    if SPEC_PATH.exists():
        with np.load(SPEC_PATH) as z:  # no pickles: the ragged specs are stored flat
            if "flat" in z:
                ends = np.cumsum(z["lengths"])[:-1]
                return np.split(z["flat"], ends, axis=1), z["y"], z["actor"]
    import deepmsi
    from deepmsi.data.media import decode_audio

    ds = deepmsi.load_dataset(f"folder:{DATA}")
    rows = [u for u in ds.utterances if u.label is not None]
    specs = [logmel(decode_audio(u.audio, sample_rate=SR)) for u in rows]
    y = np.array([ds.labels.index(u.label) for u in rows])
    actor = np.array([int(u.speaker) for u in rows])
    SPEC_PATH.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([s.shape[1] for s in specs])  # ragged: clips differ in length
    np.savez(SPEC_PATH, flat=np.concatenate(specs, axis=1), lengths=lengths, y=y, actor=actor)
    return specs, y, actor


class SpecCNN(nn.Module):
    """[B, 1, MELS, N] -> logits [B, K]: 4 conv blocks, frequency mean, time mean+max pooling."""

    def __init__(self, k: int, width: int = 24, dropout: float = 0.3) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        blocks = []
        for i in range(4):
            blocks += [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
            if i < 3:
                blocks.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * width, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x).mean(2)  # [B, C, N/8]
        return self.head(torch.cat([h.mean(2), h.amax(2)], 1))  # [B, 2C] -> [B, K]


def _crop(spec: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Fixed CROP frames: random crop (train) or centre crop (eval); short clips zero-padded."""
    n = spec.shape[1]
    if n < CROP:
        return np.pad(spec, ((0, 0), (0, CROP - n)))
    start = rng.integers(0, n - CROP + 1) if rng is not None else (n - CROP) // 2
    return spec[:, start : start + CROP]


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """SpecAugment: one frequency mask (<= 8 bands) and two time masks (<= 16 frames) each."""
    x = x.clone()
    for i in range(len(x)):
        f = rng.integers(0, 9)
        f0 = rng.integers(0, MELS - f + 1)
        x[i, :, f0 : f0 + f] = 0
        for _ in range(2):
            t = rng.integers(0, 17)
            t0 = rng.integers(0, CROP - t + 1)
            x[i, :, :, t0 : t0 + t] = 0
    return x


def _predict(model: SpecCNN, specs: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    """Probabilities [n, K]: each clip whole (batch of one: lengths differ)."""
    model.eval()
    with torch.inference_mode():
        out = [model(torch.from_numpy(specs[i])[None, None]).softmax(1)[0] for i in idx]
    return torch.stack(out).numpy()


def run_fold(specs, y, split: tuple, args, seed: int) -> tuple[float, int, float]:
    """Train one model on ``split`` = (train, dev, test) positions; epoch chosen on dev
    accuracy. -> (test acc %, epoch, dev acc %)."""
    tr, dv, te = split
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SpecCNN(int(y.max()) + 1, args.width)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-3)
    steps = args.epochs * int(np.ceil(len(tr) / args.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
    best = (-1.0, 0, None)
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = rng.permutation(tr)
        for i in range(0, len(order), args.batch):
            b = order[i : i + args.batch]
            x = torch.from_numpy(np.stack([_crop(specs[j], rng) for j in b]))[:, None]
            x = _augment(x, rng)  # [B, 1, MELS, CROP]
            target = torch.nn.functional.one_hot(torch.from_numpy(y[b]), int(y.max()) + 1).float()
            lam = float(rng.beta(args.mixup, args.mixup)) if args.mixup > 0 else 1.0
            perm = torch.randperm(len(b))
            x = lam * x + (1 - lam) * x[perm]
            target = lam * target + (1 - lam) * target[perm]
            loss = torch.sum(-target * model(x).log_softmax(1), 1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        dev_acc = 100 * float((_predict(model, specs, dv).argmax(1) == y[dv]).mean())
        if dev_acc > best[0]:
            best = (dev_acc, epoch, {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[2])
    test_acc = 100 * float((_predict(model, specs, te).argmax(1) == y[te]).mean())
    return test_acc, best[1], best[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", default=",".join(str(i) for i in range(FOLDS)))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--mixup", type=float, default=0.4, help="Beta(a, a) mixup; 0: off")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    specs, y, actor = load_specs()
    folds = make_folds(actor)
    accs = []
    t0 = time.time()
    for i in (int(s) for s in args.folds.split(",")):
        f = folds[i]
        tr, dv, te = (np.flatnonzero(np.isin(actor, g)) for g in (f.train, f.dev, f.test))
        acc, epoch, dev = run_fold(specs, y, (tr, dv, te), args, args.seed)
        accs.append(acc)
        log.info(
            "fold %d (test actors %s): acc %.2f (epoch %d, dev %.2f)", i, f.test, acc, epoch, dev
        )
    mean, std = float(np.mean(accs)), float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
    log.info(
        "mean accuracy %.2f +- %.2f over %d folds, %.0f s", mean, std, len(accs), time.time() - t0
    )
    if args.record and len(accs) == FOLDS:
        goal = f"goal {GOAL:.0f} {'reached' if mean >= GOAL else 'not reached'}"
        folds_txt = ", ".join(f"{a:.1f}" for a in accs)
        note = (
            f"{goal}. Log-mel CNN from scratch (SpecAugment, mixup), epoch on dev actors, no test-"
            f"speaker statistics; +- {std:.2f} over folds. Per fold: {folds_txt}"
        )
        record(
            [
                Row(
                    "ravdess.cnn_logmel.accuracy",
                    "RAVDESS speech, actors 1-18, 6 actor folds",
                    "a",
                    "accuracy",
                    mean,
                    command_line(),
                    note=note,
                )
            ]
        )


if __name__ == "__main__":
    main()
