"""The cross-modal supervised contrastive loss against a brute-force reference; DDP gathering."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepmsi.losses import DeepMSILoss, cross_modal_supcon
from deepmsi.models import DeepMSIOutput

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_force(
    anchors, candidates, labels, *, cand_labels=None, t=0.5, a_ok=None, c_ok=None, off=0
):
    """Loops over anchors i and candidates j; sample i of this batch is candidate i + off."""
    cand_labels = labels if cand_labels is None else cand_labels
    a_ok = [True] * len(anchors) if a_ok is None else a_ok
    c_ok = [True] * len(candidates) if c_ok is None else c_ok
    per_anchor = []
    for i in range(len(anchors)):
        if not a_ok[i]:
            continue
        s = [
            F.cosine_similarity(anchors[i], candidates[j], dim=0).item() / t
            for j in range(len(candidates))
        ]
        pos = [
            j
            for j in range(len(candidates))
            if c_ok[j] and j != i + off and cand_labels[j] == labels[i]
        ]
        neg = [j for j in range(len(candidates)) if c_ok[j] and cand_labels[j] != labels[i]]
        if not pos:
            continue
        denom_neg = sum(math.exp(s[n]) for n in neg)
        terms = [-math.log(math.exp(s[p]) / (math.exp(s[p]) + denom_neg)) for p in pos]
        per_anchor.append(sum(terms) / len(terms))
    return (sum(per_anchor) / len(per_anchor) if per_anchor else 0.0), len(per_anchor)


@pytest.mark.parametrize("seed", range(6))
def test_supcon_matches_brute_force_on_random_batches(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    b, p = 9, 5
    a, c = torch.randn(b, p, generator=g), torch.randn(b, p, generator=g)
    y = torch.randint(0, 3, (b,), generator=g)
    a_ok = torch.rand(b, generator=g) > 0.2
    c_ok = torch.rand(b, generator=g) > 0.2
    got, used = cross_modal_supcon(a, c, y, 0.5, anchor_valid=a_ok, candidate_valid=c_ok)
    ref, ref_used = brute_force(a, c, y, a_ok=a_ok.tolist(), c_ok=c_ok.tolist())
    assert used == ref_used
    assert got.item() == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_supcon_against_a_larger_candidate_set_with_offset() -> None:
    g = torch.Generator().manual_seed(7)
    a, c = torch.randn(4, 6, generator=g), torch.randn(10, 6, generator=g)
    y_all = torch.randint(0, 3, (10,), generator=g)
    y = y_all[3:7]  # this "rank" holds global samples 3..6
    got, _ = cross_modal_supcon(
        a, c, y, 0.3, candidate_labels=y_all, self_index=torch.arange(4) + 3
    )
    ref, _ = brute_force(a, c, y, cand_labels=y_all, t=0.3, off=3)
    assert got.item() == pytest.approx(ref, rel=1e-5)


def test_no_positive_pair_gives_zero_and_finite_gradients() -> None:
    a = torch.randn(4, 3, requires_grad=True)
    c = torch.randn(4, 3, requires_grad=True)
    loss, used = cross_modal_supcon(a, c, torch.arange(4))
    loss.backward()
    assert used == 0 and loss.item() == 0.0
    assert torch.isfinite(a.grad).all() and torch.isfinite(c.grad).all()


def test_no_negatives_is_finite() -> None:
    a = torch.randn(5, 3, requires_grad=True)
    c = torch.randn(5, 3, requires_grad=True)
    loss, used = cross_modal_supcon(a, c, torch.zeros(5, dtype=torch.long))
    loss.backward()
    assert used == 5 and loss.item() == pytest.approx(0.0, abs=1e-6)  # log(e^s / e^s) = 0
    assert torch.isfinite(a.grad).all() and torch.isfinite(c.grad).all()


def _output(b: int, k: int, names=("text", "audio", "video"), seed: int = 0, present=None):
    g = torch.Generator().manual_seed(seed)
    emb = {n: torch.randn(b, 8, generator=g, requires_grad=True) for n in names}
    logits = torch.randn(b, k, generator=g, requires_grad=True)
    return DeepMSIOutput(logits=logits, embeddings=emb, present=present or {})


def test_deepmsi_loss_combines_ce_and_the_two_video_pairs() -> None:
    out = _output(10, 4)
    y = torch.arange(10) % 4
    video_ok = torch.tensor([True] * 8 + [False] * 2)
    out.present["video"] = video_ok
    loss = DeepMSILoss(contrastive_weight=0.5, temperature=0.5)(out, y)
    vt, _ = brute_force(out.embeddings["video"], out.embeddings["text"], y, a_ok=video_ok.tolist())
    va, _ = brute_force(out.embeddings["video"], out.embeddings["audio"], y, a_ok=video_ok.tolist())
    assert loss.contrastive.item() == pytest.approx((vt + va) / 2, rel=1e-5)
    assert loss.ce.item() == pytest.approx(F.cross_entropy(out.logits, y).item(), rel=1e-6)
    assert loss.total.item() == pytest.approx(loss.ce.item() + 0.5 * loss.contrastive.item())
    loss.total.backward()
    assert out.embeddings["video"].grad[:8].abs().sum() > 0
    assert out.embeddings["video"].grad[8:].abs().sum() == 0  # missing video: no anchor


def test_unimodal_term_is_each_heads_cross_entropy_on_present_samples_only() -> None:
    out = _output(10, 4)
    y = torch.arange(10) % 4
    g = torch.Generator().manual_seed(1)
    out.unimodal = {
        n: torch.randn(10, 4, generator=g, requires_grad=True) for n in ("text", "video")
    }
    video_ok = torch.tensor([True] * 7 + [False] * 3)
    out.present["video"] = video_ok
    loss = DeepMSILoss(contrastive_weight=0.5, unimodal_weight=0.7)(out, y)
    text_ce = F.cross_entropy(out.unimodal["text"], y)
    video_ce = F.cross_entropy(out.unimodal["video"][video_ok], y[video_ok])
    assert loss.unimodal.item() == pytest.approx(((text_ce + video_ce) / 2).item(), rel=1e-6)
    want = loss.ce + 0.5 * loss.contrastive + 0.7 * loss.unimodal
    assert loss.total.item() == pytest.approx(want.item(), rel=1e-6)
    loss.total.backward()
    assert out.unimodal["video"].grad[7:].abs().sum() == 0  # a placeholder teaches nothing
    assert out.unimodal["video"].grad[:7].abs().sum() > 0


def test_without_unimodal_logits_the_term_is_zero() -> None:
    out = _output(6, 3)
    loss = DeepMSILoss(unimodal_weight=1.0)(out, torch.arange(6) % 3)
    assert loss.unimodal.item() == 0.0
    assert loss.total.item() == pytest.approx((loss.ce + 0.5 * loss.contrastive).item())


def test_models_without_video_have_no_contrastive_term() -> None:
    out = _output(6, 3, names=("text", "audio"))
    loss = DeepMSILoss()(out, torch.arange(6) % 3)
    assert loss.contrastive.item() == 0.0
    loss.total.backward()  # still a graph


# ---- DDP ---------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, init_file: str, sizes: list[int], queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        full = _output(sum(sizes), 3, seed=11)
        y_all = torch.arange(sum(sizes)) % 3
        lo = sum(sizes[:rank])
        hi = lo + sizes[rank]
        local = {
            n: e.detach()[lo:hi].clone().requires_grad_(True) for n, e in full.embeddings.items()
        }
        out = DeepMSIOutput(full.logits.detach()[lo:hi], local, {})
        loss = DeepMSILoss().contrastive(out, y_all[lo:hi])
        loss.backward()
        # numpy, not tensors: a tensor crosses the queue as a shared-memory handle that dies with
        # this process, which may exit before the parent reads it.
        queue.put((rank, loss.item(), {n: e.grad.numpy().copy() for n, e in local.items()}))
    finally:
        dist.destroy_process_group()


def test_ddp_gathers_negatives_from_every_rank_with_gradients(tmp_path) -> None:
    import torch.multiprocessing as mp

    sizes = [3, 5]  # unequal batches exercise the padding
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init_file = str(tmp_path / "dist_init")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs = [
        ctx.Process(target=_ddp_worker, args=(r, 2, init_file, sizes, queue)) for r in range(2)
    ]
    for p in procs:
        p.start()
    results = dict((r, (loss, grads)) for r, loss, grads in (queue.get(timeout=60) for _ in procs))
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    # Reference in one process: each rank's anchors against the global batch; gradients of the
    # sum of the two rank losses (what all_gather's backward sums up).
    full = _output(8, 3, seed=11)
    y_all = torch.arange(8) % 3
    total = 0.0
    for rank, (lo, hi) in enumerate([(0, 3), (3, 8)]):
        out = DeepMSIOutput(
            full.logits[lo:hi], {**full.embeddings, "video": full.embeddings["video"][lo:hi]}, {}
        )
        loss_fn = DeepMSILoss()
        terms = []
        for partner in ("text", "audio"):
            val, _ = cross_modal_supcon(
                out.embeddings["video"],
                full.embeddings[partner],
                y_all[lo:hi],
                candidate_labels=y_all,
                self_index=torch.arange(hi - lo) + lo,
            )
            terms.append(val)
        ref = torch.stack(terms).mean()
        assert results[rank][0] == pytest.approx(ref.item(), rel=1e-5)
        assert loss_fn.temperature == 0.5
        total = total + ref
    total.backward()
    for name in ("text", "audio", "video"):
        got = torch.from_numpy(np.concatenate([results[0][1][name], results[1][1][name]]))
        torch.testing.assert_close(got, full.embeddings[name].grad)
