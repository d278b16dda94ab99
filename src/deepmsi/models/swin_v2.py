"""Swin-Transformer-V2 (Liu et al. 2022) with optional visual sequence compression in stage 3.

V2 ingredients: cosine window attention with a learned, clamped per-head logit scale; a
continuous relative position bias produced by a small MLP over log-spaced relative coordinates;
residual post-norm (``x + norm(f(x))``); patch merging with LayerNorm after the reduction.
Tokens are kept flat, [N, L, C] with L = H * W; each block knows its grid statically.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from deepmsi.config import PRECISIONS, VSC_STAGE, ModelConfig
from deepmsi.errors import ConfigError
from deepmsi.models.vsc import VisualSequenceCompression
from deepmsi.nn import (
    DropPath,
    Mlp,
    autocast,
    fit_window,
    float32_region,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)
# Inference batches are cut into chunks of about this many stage-1 tokens (3 frames of the paper
# preset): on a 2-core EPYC, 3-5 frame chunks took 0.8x the time of one 15-frame batch.
INFERENCE_CHUNK_TOKENS = 12288
# Inside a chunk, the transformer MLPs go through this many tokens at a time (see SwinV2Block).
MLP_CHUNK_TOKENS = 1024


def _tracing() -> bool:
    """Tracing or exporting: shapes must stay symbolic and nothing may be cached."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _relative_coords_table(window: int, pretrained_window: int = 0) -> torch.Tensor:
    """Log-spaced relative offsets fed to the position-bias MLP: [(2w-1)^2, 2] in about [-1, 1].

    Offsets are normalised by ``pretrained_window - 1`` when given (Swin-V2's rule for
    fine-tuning at another window: an offset of d tokens reaches the MLP as the coordinate it
    had in training, so VSC's shrunken windows reuse a pretrained MLP), else by ``window - 1``.
    """
    rel = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(rel, rel, indexing="ij"), dim=-1)  # 2w-1, 2w-1, 2
    span = (pretrained_window or window) - 1
    if span > 0:
        table = table / span * 8.0  # normalise to [-8, 8] like Swin-V2
    # NOTE(official-code): the authors scale by the window size instead of 8 (a no-op for their
    # window 8, different for the shrunken VSC windows 7/6/5).
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.view(-1, 2)


def _relative_position_index(window: int) -> torch.Tensor:
    """For each (query, key) pair in a window, the row of the coords table: [N * N], N = w*w."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ).flatten(1)  # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # 2, N, N in [0, 2w-2]
    return (rel[0] * (2 * window - 1) + rel[1]).flatten()


class WindowAttention(nn.Module):
    """Cosine multi-head self-attention inside w x w windows: [B*nW, N, C] -> [B*nW, N, C]."""

    k_bias: torch.Tensor
    coords_table: torch.Tensor
    position_index: torch.Tensor

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        *,
        cpb_hidden: int = 512,
        dropout: float = 0.0,
        pretrained_window: int = 0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, cpb_hidden), nn.ReLU(inplace=True), nn.Linear(cpb_hidden, num_heads, False)
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)  # V2: no key bias
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        coords = _relative_coords_table(window, pretrained_window)
        self.register_buffer("coords_table", coords, persistent=False)
        self.register_buffer("position_index", _relative_position_index(window), persistent=False)
        self._bias_cache: tuple[tuple[object, ...], torch.Tensor] | None = None
        # Scaled-dot-product-attention kernel: None chooses it on GPUs (flash / memory-efficient
        # kernels); on CPUs the explicit product measured faster for Swin's 16-64-token windows.
        self.sdpa: bool | None = None

    def position_bias(self) -> torch.Tensor:
        """Continuous relative position bias, [heads, N, N], in (0, 16)."""
        n = self.window * self.window
        table = self.cpb_mlp(self.coords_table)  # (2w-1)^2, heads
        bias = table[self.position_index].view(n, n, -1).permute(2, 0, 1)  # heads, N, N
        return 16.0 * torch.sigmoid(bias)

    def attention_bias(self, mask: torch.Tensor | None) -> torch.Tensor:
        """Position bias plus the shift mask: [heads, N, N], or [nW, heads, N, N] with a mask.

        It depends only on weights, so without autograd it is computed once and kept until the
        position-bias MLP's weights change (an optimiser step, a load, a move to another device).
        """
        if torch.is_grad_enabled() or _tracing():
            return self._attention_bias(mask)
        key = (
            *((p.data_ptr(), p._version) for p in self.cpb_mlp.parameters()),
            None if mask is None else (mask.data_ptr(), mask._version),
        )
        if self._bias_cache is None or self._bias_cache[0] != key:
            # in float32 even under bf16 autocast: the bias is computed once and stays exact
            with float32_region(self.coords_table.device):
                self._bias_cache = (key, self._attention_bias(mask))
        return self._bias_cache[1]

    def _attention_bias(self, mask: torch.Tensor | None) -> torch.Tensor:
        bias = self.position_bias()
        return bias if mask is None else bias[None] + mask[:, None]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B*nW, N, C]; mask [nW, N, N] additive (0 / -100) or None."""
        bw, n, c = x.shape
        bias = torch.cat([self.q_bias, self.k_bias, self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).view(bw, n, 3, self.num_heads, -1)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # 3, B*nW, heads, N, d
        if self.num_heads > 1:
            # One copy into head-major order: the norms, products and matmuls below then read
            # contiguous memory, and matmul no longer copies q, k and v one by one (1.1-1.2x the
            # attention's speed, forward and backward; one head's views need no copy).
            qkv = qkv.contiguous()
        q, k, v = qkv.unbind(0)  # each B*nW, heads, N, d
        # Cosine attention: unit-length q and k, the logit scale folded into q's normalisation.
        scale = self.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()  # heads, 1, 1
        q = q * (scale * _inverse_norm(q))
        k = k * _inverse_norm(k)
        attn_bias = self.attention_bias(mask)
        windows = (-1, attn_bias.shape[0]) if mask is not None else (-1,)
        if x.is_cuda if self.sdpa is None else self.sdpa:
            q, k, v = (t.reshape(*windows, *t.shape[1:]) for t in (q, k, v))
            p = self.drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_bias, dropout_p=p, scale=1.0)
            out = out.reshape(bw, self.num_heads, n, -1)
        else:
            attn = q @ k.transpose(-2, -1)  # B*nW, heads, N, N
            attn = attn.view(*windows, *attn_bias.shape[-3:])
            # in place saves a pass over the scores; ONNX export wants the plain sum
            attn = attn + attn_bias if _tracing() else attn.add_(attn_bias)
            attn = attn.view(bw, self.num_heads, n, n)
            out = self.drop(attn.softmax(dim=-1)) @ v
        return self.drop(self.proj(out.transpose(1, 2).reshape(bw, n, c)))


def _inverse_norm(x: torch.Tensor) -> torch.Tensor:
    """1 / max(||x||, 1e-12) over the last dim, as ``F.normalize`` divides by."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12).reciprocal()


class SwinV2Block(nn.Module):
    """(Shifted) window attention + MLP with residual post-norm on a grid x grid token map.

    With ``keep_grid`` set, the block is a VSC block: after attention it keeps ``keep_grid**2``
    tokens (guided by [N, C] guidance), so it maps [N, grid^2, C] -> [N, keep_grid^2, C].
    """

    attn_mask: torch.Tensor

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: int,
        window: int,
        *,
        shifted: bool,
        mlp_ratio: float = 4.0,
        cpb_hidden: int = 512,
        drop_path: float = 0.0,
        keep_grid: int | None = None,
        vsc_threshold: float = 0.6,
        vsc_alpha: float = 0.9,
        pretrained_window: int = 0,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.window = fit_window(grid, window)
        # A single window covers the whole grid: shifting would only wrap it around.
        self.shift = self.window // 2 if shifted and self.window < grid else 0
        self.out_grid = keep_grid or grid
        self.attn = WindowAttention(
            dim, num_heads, self.window, cpb_hidden=cpb_hidden, pretrained_window=pretrained_window
        )
        self.norm1 = nn.LayerNorm(dim)
        self.vsc = (
            VisualSequenceCompression(keep_grid * keep_grid, vsc_threshold, vsc_alpha)
            if keep_grid
            else None
        )
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path)
        self.register_buffer(
            "attn_mask", shifted_window_mask(grid, self.window, self.shift), persistent=False
        )

    def extra_repr(self) -> str:
        return f"grid={self.grid}->{self.out_grid}, window={self.window}, shift={self.shift}"

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        n, _, c = x.shape
        x = x.view(n, self.grid, self.grid, c)  # N, H, W, C
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(x, self.window)  # N*nW, w*w, C
        windows = self.attn(windows, self.attn_mask)
        x = window_reverse(windows, self.window, self.grid, self.grid)  # N, H, W, C
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x.reshape(n, self.grid * self.grid, c)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, grid^2, C] -> [N, out_grid^2, C]."""
        x = x + self.drop_path(self.norm1(self._window_attention(x)))
        if self.vsc is not None:
            # NOTE(official-code): the authors' VSC blocks drop the attention residual and add a
            # LayerNorm without residual around VSC; we keep the standard post-norm residuals.
            x = self.vsc(x, guidance).tokens  # N, keep, C
        if self.training or torch.is_grad_enabled() or _tracing():  # drop path, autograd
            return x + self.drop_path(self.norm2(self.mlp(x)))
        # Inference: the MLP runs on slices of MLP_CHUNK_TOKENS tokens, whose 4x-wide hidden
        # activations stay in the CPU's cache (every op here is per token: same result).
        flat = x.reshape(-1, x.shape[-1])
        out = torch.empty_like(flat)
        for part, dest in zip(
            flat.split(MLP_CHUNK_TOKENS), out.split(MLP_CHUNK_TOKENS), strict=True
        ):
            torch.add(part, self.norm2(self.mlp(part)), out=dest)
        return out.view_as(x)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens: [N, 3, S, S] -> [N, (S/p)^2, C], then LayerNorm."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token, reduce 4C -> 2C, then LayerNorm (V2 order).

    [N, H*W, C] -> [N, ceil(H/2)*ceil(W/2), 2C]; an odd grid is zero-padded first.
    """

    def __init__(self, dim: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, c = x.shape
        x = x.view(n, self.grid, self.grid, c)  # N, H, W, C
        pad = self.grid % 2
        x = F.pad(x, (0, 0, 0, pad, 0, pad))
        h = (self.grid + pad) // 2
        x = x.view(n, h, 2, h, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(n, h * h, 4 * c)
        return self.norm(self.reduction(x))


class SwinV2Stage(nn.Module):
    """Optional patch merging, then ``depth`` blocks alternating plain and shifted windows.

    In the VSC stage every non-shifted block ends with VSC, shrinking the grid to the next entry
    of ``vsc_grids``; the following shifted block works on the shrunken grid.
    """

    def __init__(
        self, cfg: ModelConfig, index: int, *, in_grid: int, drop_path: list[float], vsc: bool
    ) -> None:
        """Stage ``index`` of the backbone ``cfg`` describes, on an ``in_grid`` token map (before
        its patch merging); ``vsc`` compresses it when it is the VSC stage."""
        dims = cfg.stage_dims
        in_dim, dim, downsample = dims[max(index - 1, 0)], dims[index], index > 0
        vsc_grids = cfg.vsc_grids if vsc and index == VSC_STAGE else ()
        super().__init__()
        self.downsample = PatchMerging(in_dim, in_grid) if downsample else None
        grid = math.ceil(in_grid / 2) if downsample else in_grid
        self.in_grid = grid
        targets = list(vsc_grids)
        self.blocks = nn.ModuleList()
        for i in range(cfg.depths[index]):
            keep = targets.pop(0) if (targets and i % 2 == 0) else None
            block = SwinV2Block(
                dim,
                cfg.num_heads[index],
                grid,
                cfg.window_size,
                shifted=i % 2 == 1,
                mlp_ratio=cfg.mlp_ratio,
                cpb_hidden=cfg.cpb_hidden,
                drop_path=drop_path[i],
                keep_grid=keep,
                vsc_threshold=cfg.vsc_threshold,
                vsc_alpha=cfg.vsc_alpha,
                pretrained_window=cfg.pretrained_window[index] if cfg.pretrained_window else 0,
            )
            self.blocks.append(block)
            grid = block.out_grid
        self.out_grid = grid

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        for block in self.blocks:
            x = block(x, guidance)
        return x


class SwinV2(nn.Module):
    """The per-frame visual backbone: [N, 3, S, S] (normalised) -> [N, C_last] pooled feature.

    ``guidance`` [N, C3] (C3 = width of stage 3) steers VSC; it is ignored without VSC. ``vsc``
    None follows ``cfg.vsc_enabled`` (no VSC for a config without text or audio to guide it).
    """

    def __init__(self, cfg: ModelConfig, vsc: bool | None = None) -> None:
        super().__init__()
        vsc = cfg.vsc_enabled if vsc is None else vsc
        self.config = cfg
        self.uses_vsc = vsc
        # Inference arithmetic, one of config.PRECISIONS (set_precision); bf16 autocasts matmuls,
        # convolutions and attention (CPUs with AVX-512 BF16 or AMX, GPUs); export stays fp32.
        self.precision = "fp32"
        dims = cfg.stage_dims
        self.guidance_dim = dims[VSC_STAGE]
        self.num_features = dims[-1]
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        total = sum(cfg.depths)
        rates = [cfg.drop_path * i / max(total - 1, 1) for i in range(total)]  # 0 -> drop_path
        grid = cfg.image_size // cfg.patch_size
        self.stages = nn.ModuleList()
        try:
            for i, depth in enumerate(cfg.depths):
                start = sum(cfg.depths[:i])
                stage = SwinV2Stage(
                    cfg, i, in_grid=grid, drop_path=rates[start : start + depth], vsc=vsc
                )
                self.stages.append(stage)
                grid = stage.out_grid
        except ValueError as err:
            raise ConfigError(f"model config: {err}") from err
        self.norm = nn.LayerNorm(self.num_features)
        self.apply(_init_weights)
        # As in the official Swin-V2: every block starts as the identity (its residual post-norms
        # are zero), so a backbone trained from scratch first passes the patch features through
        # and grows its blocks from there (docs/balanced-training.md: the video branch learns).
        for block in self.modules():
            if isinstance(block, SwinV2Block):
                for norm in (block.norm1, block.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)

    @classmethod
    def from_pretrained(cls, source: str, cfg: ModelConfig, vsc: bool | None = None) -> SwinV2:
        """A backbone initialised from transformers Swinv2 weights: SOURCE is a Hugging Face id
        or a local folder (config.json + model.safetensors).

        ``cfg`` must match the checkpoint's tensor shapes (else a ConfigError lists each field);
        the model's ``config`` is ``cfg`` with the checkpoint's ``pretrained_window``, which a
        model rebuilt from it (a saved run) needs to compute the same position bias.
        """
        from deepmsi.models.swin_v2_hf import adapt_config, load_hf_weights
        from deepmsi.pretrained import read_pretrained  # the file reading lives outside models

        weights = read_pretrained(source)
        model = cls(adapt_config(cfg, weights.config, source), vsc)
        load_hf_weights(model, weights.state, source)
        return model

    def stage_tokens(self) -> list[tuple[int, int]]:
        """(tokens in, tokens out) of every stage, after patch merging; static given the config."""
        stages = cast(list[SwinV2Stage], list(self.stages))
        return [(s.in_grid**2, s.out_grid**2) for s in stages]

    def forward(self, images: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        """images [N, 3, S, S], guidance [N, C3] or None -> [N, C_last].

        Without autograd, frames go through in chunks of about ``INFERENCE_CHUNK_TOKENS`` tokens:
        every op is per frame, so the result is the same, and a chunk's activations stay in the
        CPU's cache instead of streaming the whole batch's through memory at each op. Stages 1-2
        are cut by their stage-1 tokens; stages 3-4, whose token maps are 16x smaller (and smaller
        again with VSC), by their stage-3 tokens, so that their small ops run on many frames at
        once instead of paying each op's fixed cost per few frames.
        """
        if _tracing() or torch.is_grad_enabled():
            return self._late(self._early(images), guidance)
        if self.precision == "fp32":
            return self._infer(images, guidance)
        with autocast(self.precision, images.device):
            return self._infer(images, guidance).float()

    def _infer(self, images: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        early = max(1, INFERENCE_CHUNK_TOKENS // self.stage_tokens()[0][0])
        if images.shape[0] <= early:
            return self._late(self._early(images), guidance)
        late = max(early, INFERENCE_CHUNK_TOKENS // self.stage_tokens()[VSC_STAGE][0])
        guides = guidance.split(late) if guidance is not None else None
        out = []
        for i, frames in enumerate(images.split(late)):
            x = torch.cat([self._early(part) for part in frames.split(early)])
            out.append(self._late(x, None if guides is None else guides[i]))
        return torch.cat(out)

    def _early(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding and the stages before VSC's (which need no guidance)."""
        x = self.patch_embed(images)  # N, L, C
        for stage in self.stages[:VSC_STAGE]:
            x = stage(x)
        return x

    def _late(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        for stage in self.stages[VSC_STAGE:]:
            x = stage(x, guidance)
        return self.norm(x).mean(dim=1)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def set_precision(model: nn.Module, precision: str) -> None:
    """Run every Swin-V2 backbone in ``model`` in ``precision`` ("fp32" or "bf16") for inference.

    bf16 takes 0.5-0.75x the backbone's time where the hardware has bf16 arithmetic, at the
    cost of about three significant digits in its features (with VSC, a near-tie can change a
    kept token); autograd (training: ``TrainConfig.precision``) and ONNX export ignore it."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    for module in model.modules():
        if isinstance(module, SwinV2):
            module.precision = precision
