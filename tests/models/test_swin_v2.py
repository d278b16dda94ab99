"""Swin-V2 blocks and visual sequence compression against slow references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers_model import grow_blocks, naive_shift_mask

from deepmsi.config import VSC_STAGE, model_preset
from deepmsi.errors import ConfigError
from deepmsi.models import swin_v2
from deepmsi.models.swin_v2 import PatchMerging, SwinV2, SwinV2Block, WindowAttention
from deepmsi.models.vsc import VisualSequenceCompression

pytestmark = pytest.mark.usefixtures("one_thread")


def naive_window_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """One window [N, C], no mask: cosine attention + a bias MLP evaluated pair by pair."""
    n, c = x.shape
    w, heads = attn.window, attn.num_heads
    d = c // heads
    bias = torch.cat([attn.q_bias, torch.zeros(c), attn.v_bias])
    q, k, v = (x @ attn.qkv.weight.T + bias).split(c, dim=-1)
    pos = [(i // w, i % w) for i in range(n)]
    out = torch.zeros(n, c)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        scale = math.exp(min(attn.logit_scale[h].item(), math.log(100.0)))
        logits = torch.zeros(n, n)
        for i in range(n):
            for j in range(n):
                rel = torch.tensor(
                    [pos[i][0] - pos[j][0], pos[i][1] - pos[j][1]], dtype=torch.float
                )
                if w > 1:
                    rel = rel / (w - 1) * 8
                rel = torch.sign(rel) * torch.log2(rel.abs() + 1) / math.log2(8)
                b = 16 * torch.sigmoid(attn.cpb_mlp(rel)[h])
                logits[i, j] = scale * F.cosine_similarity(q[i, sl], k[j, sl], dim=0) + b
        out[:, sl] = logits.softmax(-1) @ v[:, sl]
    return attn.proj(out)


def test_window_attention_matches_a_pairwise_reference() -> None:
    torch.manual_seed(0)
    attn = WindowAttention(dim=8, num_heads=2, window=3, cpb_hidden=16).eval()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
        attn.logit_scale[1] = 9.0  # above log(100): must be clamped
    x = torch.randn(2, 9, 8)
    with torch.no_grad():
        got = attn(x)
        for b in range(2):
            torch.testing.assert_close(got[b], naive_window_attention(attn, x[b]))


def test_patch_merging_concatenates_2x2_neighbours_and_pads_odd_grids() -> None:
    torch.manual_seed(0)
    for grid in (4, 5):
        pm = PatchMerging(dim=3, grid=grid).eval()
        x = torch.randn(2, grid * grid, 3)
        m = F.pad(x.view(2, grid, grid, 3), (0, 0, 0, grid % 2, 0, grid % 2))
        cat = torch.cat(
            [m[:, 0::2, 0::2], m[:, 1::2, 0::2], m[:, 0::2, 1::2], m[:, 1::2, 1::2]], -1
        )
        ref = pm.norm(pm.reduction(cat.flatten(1, 2)))
        torch.testing.assert_close(pm(x), ref)


@pytest.fixture(scope="module")
def paper_backbone() -> SwinV2:
    torch.manual_seed(0)
    return SwinV2(model_preset("paper")).eval()


def test_paper_stage3_block_geometry_and_masks(paper_backbone: SwinV2) -> None:
    backbone = paper_backbone
    blocks = list(backbone.stages[2].blocks)
    geometry = [(b.grid, b.window, b.shift, b.out_grid, b.vsc is not None) for b in blocks]
    assert geometry == [
        (16, 8, 0, 14, True),
        (14, 7, 3, 14, False),
        (14, 7, 0, 12, True),
        (12, 6, 3, 12, False),
        (12, 6, 0, 10, True),
        (10, 5, 2, 10, False),
    ]
    for b in blocks:
        if b.shift:
            torch.testing.assert_close(b.attn_mask, naive_shift_mask(b.grid, b.window, b.shift))
        else:
            assert b.attn_mask is None
    # Stage 4 sees 25 tokens (5x5, one global window) instead of 64.
    assert backbone.stage_tokens() == [(4096, 4096), (1024, 1024), (256, 100), (25, 25)]
    with torch.device("meta"):  # geometry only, no weights
        plain = SwinV2(model_preset("paper", vsc=False))
    assert plain.stage_tokens()[2:] == [(256, 256), (64, 64)]


def _stage_outputs(backbone: SwinV2, images: torch.Tensor, guidance: torch.Tensor | None):
    seen: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
        for m in backbone.stages
    ]
    out = backbone(images, guidance)
    for h in hooks:
        h.remove()
    return out, seen


@pytest.mark.parametrize("vsc", [True, False])
def test_token_counts_per_stage_at_runtime(vsc: bool) -> None:
    cfg = model_preset("tiny", vsc=vsc)
    backbone = SwinV2(cfg).eval()
    images = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    guidance = torch.randn(3, backbone.guidance_dim)
    out, seen = _stage_outputs(backbone, images, guidance)
    assert out.shape == (3, cfg.stage_dims[-1])
    # tiny: 24x24 patches -> 12x12 -> 6x6 (VSC: 4x4, 3x3) -> 2x2
    assert seen == ([576, 144, 9, 4] if vsc else [576, 144, 36, 9])
    assert seen == [t_out for _, t_out in backbone.stage_tokens()]
    per_block = [b.out_grid**2 for b in backbone.stages[2].blocks]
    assert per_block == ([16, 16, 9, 9] if vsc else [36, 36, 36, 36])
    geometry = [(b.grid, b.window, b.shift) for b in backbone.stages[2].blocks]
    assert geometry == (
        [(6, 3, 0), (4, 2, 1), (4, 2, 0), (3, 3, 0)] if vsc else [(6, 3, 0), (6, 3, 1)] * 2
    )


def test_paper_backbone_runs_one_frame_with_compressed_stage4(paper_backbone: SwinV2) -> None:
    with torch.no_grad():
        out, seen = _stage_outputs(paper_backbone, torch.randn(1, 3, 256, 256), torch.randn(1, 384))
    assert out.shape == (1, 768) and torch.isfinite(out).all()
    assert seen == [4096, 1024, 100, 25]


# ---- VSC ---------------------------------------------------------------------------------------
def _scores(x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    query = x.mean(1) + guidance
    return F.cosine_similarity(x, query[:, None], dim=-1)  # N, L


def test_vsc_keeps_the_top_tokens_in_spatial_order() -> None:
    torch.manual_seed(1)
    x, g = torch.randn(3, 25, 6), torch.randn(3, 6)
    vsc = VisualSequenceCompression(keep=9, threshold=1.01)  # nothing can merge
    out = vsc(x, g)
    scores = _scores(x, g)
    for n in range(3):
        idx = out.index[n].tolist()
        assert idx == sorted(idx)
        assert set(idx) == set(scores[n].topk(9).indices.tolist())
        torch.testing.assert_close(out.tokens[n], x[n, idx], rtol=0, atol=0)
    torch.testing.assert_close(out.scores, scores)


def test_vsc_merges_only_where_the_threshold_is_met() -> None:
    torch.manual_seed(2)
    x, g = torch.randn(2, 16, 4), torch.randn(2, 4)
    alpha, thr = 0.9, 0.6
    out = VisualSequenceCompression(keep=6, threshold=thr, alpha=alpha)(x, g)
    changed = unchanged = 0
    for n in range(2):
        kept_idx = out.index[n].tolist()
        dropped_idx = [i for i in range(16) if i not in kept_idx]
        kept, dropped = x[n, kept_idx], x[n, dropped_idx]
        for j in range(6):
            total, matched = torch.zeros(4), False
            for i in range(len(dropped_idx)):
                sims = F.cosine_similarity(dropped[i][None], kept, dim=-1)  # K
                if sims[j] > thr:
                    matched = True
                    total += sims.softmax(0)[j] * dropped[i]
            if matched:
                changed += 1
                expected = alpha * kept[j] + (1 - alpha) * total
                torch.testing.assert_close(out.tokens[n, j], expected)
            else:
                unchanged += 1
                torch.testing.assert_close(out.tokens[n, j], kept[j], rtol=0, atol=0)
    assert changed and unchanged  # the random case exercises both branches


def test_vsc_gives_the_guidance_a_gradient() -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 16, 8, requires_grad=True)
    g = torch.randn(2, 8, requires_grad=True)
    out = VisualSequenceCompression(keep=9)(x, g)
    (out.tokens * torch.randn_like(out.tokens)).sum().backward()
    assert g.grad is not None and g.grad.abs().sum() > 0


def test_vsc_without_guidance_scores_against_the_mean_token() -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 16, 8)
    out = VisualSequenceCompression(keep=4, threshold=1.01)(x, None)
    torch.testing.assert_close(out.scores, _scores(x, torch.zeros(2, 8)))


def test_vsc_block_shrinks_the_grid() -> None:
    block = SwinV2Block(dim=8, num_heads=2, grid=6, window=3, shifted=False, keep_grid=4).eval()
    out = block(torch.randn(2, 36, 8), torch.randn(2, 8))
    assert out.shape == (2, 16, 8)


def test_a_fresh_backbone_starts_from_identity_blocks() -> None:
    """As in the official Swin-V2, residual post-norms start at zero: a block trained from
    scratch first passes its input through (docs/balanced-training.md)."""
    torch.manual_seed(0)
    model = SwinV2(model_preset("tiny"), vsc=False)
    block = next(m for m in model.modules() if isinstance(m, SwinV2Block) and m.shift)
    x = torch.randn(2, block.grid**2, block.norm1.weight.shape[0])
    norms = [m.norm1.weight for m in model.modules() if isinstance(m, SwinV2Block)]
    assert norms and all(not w.any() for w in norms)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    assert not torch.equal(grow_blocks(block)(x), x)  # the test would see a block that works


@pytest.mark.parametrize("vsc", [False, True])
def test_inference_path_equals_the_training_path(
    vsc: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without autograd, SwinV2 caches the attention bias and runs MLPs on token slices: the
    pooled output must not move (the path with autograd computes everything plainly)."""
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    model = grow_blocks(SwinV2(cfg, vsc=vsc)).eval()
    images = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    guidance = torch.randn(3, model.guidance_dim)
    plain = model(images, guidance).detach()
    monkeypatch.setattr(swin_v2, "MLP_CHUNK_TOKENS", 5)  # many slices, a ragged last one
    with torch.no_grad():
        fast = model(images, guidance)
        again = model(images, guidance)  # from the cached bias
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, fast, rtol=0, atol=0)


def test_cached_attention_bias_follows_the_weights() -> None:
    torch.manual_seed(0)
    attn = WindowAttention(dim=8, num_heads=2, window=3, cpb_hidden=16).eval()
    mask = naive_shift_mask(6, 3, 1)
    with torch.no_grad():
        before = attn.attention_bias(mask)
        assert attn.attention_bias(mask) is before  # cached
        attn.cpb_mlp[0].weight.add_(0.5)  # what an optimiser step does
        after = attn.attention_bias(mask)
        assert not torch.allclose(after, before)
        torch.testing.assert_close(after, attn.position_bias()[None] + mask[:, None])
        attn.load_state_dict(WindowAttention(8, 2, 3, cpb_hidden=16).state_dict())
        torch.testing.assert_close(attn.attention_bias(None), attn.position_bias())
        assert attn.attention_bias(mask).shape == (mask.shape[0], 2, 9, 9)


@pytest.mark.parametrize("shifted", [False, True])
def test_sdpa_kernel_equals_the_explicit_product(shifted: bool) -> None:
    """GPUs take torch's scaled-dot-product kernel; forced on here, it must agree."""
    torch.manual_seed(0)
    block = grow_blocks(SwinV2Block(dim=8, num_heads=2, grid=6, window=3, shifted=shifted)).eval()
    x = torch.randn(2, 36, 8)
    with torch.no_grad():
        explicit = block(x)
        block.attn.sdpa = True
        fused = block(x)
    torch.testing.assert_close(fused, explicit, rtol=0, atol=1e-5)


def _tiny_backbone(vsc: bool, frames: int) -> tuple[SwinV2, torch.Tensor, torch.Tensor]:
    """A grown tiny-preset backbone in eval mode, ``frames`` random images and guidance."""
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    model = grow_blocks(SwinV2(cfg, vsc=vsc)).eval()
    images = torch.randn(frames, 3, cfg.image_size, cfg.image_size)
    return model, images, torch.randn(frames, model.guidance_dim)


@pytest.mark.parametrize("vsc", [False, True])
@pytest.mark.parametrize("budget_stage", [0, VSC_STAGE])
def test_inference_in_chunks_equals_one_batch(
    vsc: bool, budget_stage: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 3 frames at the stage whose tokens set the budget: stages 1-2 in chunks of 3
    (stages 3-4 whole), or stages 3-4 in chunks of 3 (each made of 1-frame early chunks)."""
    model, images, guidance = _tiny_backbone(vsc, frames=7)
    with torch.no_grad():
        whole = model._late(model._early(images), guidance)
        tokens = model.stage_tokens()[budget_stage][0]
        monkeypatch.setattr(swin_v2, "INFERENCE_CHUNK_TOKENS", 3 * tokens)  # chunks of 3, 3, 1
        chunked = model(images, guidance)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)  # GEMM rounding only
    with torch.enable_grad():  # training takes the whole batch: nothing to change for autograd
        assert model(images, guidance).requires_grad


@pytest.mark.parametrize("vsc", [False, True])
def test_bf16_inference_is_close_and_leaves_training_in_fp32(vsc: bool) -> None:
    """bf16 autocast is an inference option: float32 features within bf16's rounding, the
    position bias kept in float32, and autograd (training) untouched."""
    model, images, guidance = _tiny_backbone(vsc, frames=5)
    with torch.no_grad():
        exact = model(images, guidance)
        swin_v2.set_precision(model, "bf16")
        fast = model(images, guidance)
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)  # bf16 really ran
    cosine = F.cosine_similarity(fast, exact, dim=-1)
    # With VSC, bf16's rounding upstream can flip which of two near-tied tokens is kept (VSC
    # itself scores in float32): those frames differ by more than rounding, so only VSC off
    # has a closeness bound; benchmarks/precision.py measures what it does to accuracy.
    assert cosine.min() > (0.999 if not vsc else -1.0), cosine
    attn = next(m for m in model.modules() if isinstance(m, WindowAttention))
    assert attn._bias_cache is not None and attn._bias_cache[1].dtype == torch.float32
    trained = model(images, guidance)  # grad enabled: the fp32 graph, bit for bit
    torch.testing.assert_close(trained, exact, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, got 'fp16'"):
        swin_v2.set_precision(model, "fp16")
