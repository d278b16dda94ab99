"""Window helpers for (shifted) window attention on a square token grid of any size."""

from __future__ import annotations

import torch


def fit_window(grid: int, window: int) -> int:
    """The window side to use on a ``grid x grid`` token map with a configured ``window``.

    A grid no larger than the window gets one global window. Otherwise the window must tile the
    grid exactly, so we take the largest divisor of ``grid`` that is ``<= window`` (paper preset:
    window 8 on grids 16/14/12/10 gives 8/7/6/5, the windows the authors hard-coded). A grid with
    no divisor in ``[2, window]`` (a prime larger than the window) is rejected rather than padded.
    """
    if grid < 1 or window < 1:
        raise ValueError(f"grid and window must be >= 1, got grid={grid}, window={window}")
    if grid <= window:
        return grid
    best = max(d for d in range(1, window + 1) if grid % d == 0)
    if best < 2:
        raise ValueError(f"a {grid}x{grid} token grid has no window side in [2, {window}]")
    return best


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * nW, window * window, C] (windows in raster order per image)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)  # B, H/w, w, W/w, w, C
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: [B * nW, window * window, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def shifted_window_mask(grid: int, window: int, shift: int) -> torch.Tensor | None:
    """Additive attention mask for shifted windows on a ``grid x grid`` map: [nW, N, N], N = w*w.

    After the cyclic roll by ``-shift``, a window at the bottom/right edge holds tokens that were
    not neighbours in the image. Label every position by the region it came from (three bands per
    axis: ``[0, grid-window)``, ``[grid-window, grid-shift)``, ``[grid-shift, grid)``); tokens in
    different regions get -100 (softmax weight ~0). Built for this grid, not a fixed one.
    Returns None when ``shift`` is 0.
    """
    if shift == 0:
        return None
    if grid % window or not 0 < shift < window:
        raise ValueError(f"need window | grid and 0 < shift < window (grid {grid}, w {window})")
    pos = torch.arange(grid)
    band = (pos >= grid - window).long() + (pos >= grid - shift).long()  # [grid] in {0, 1, 2}
    region = (band[:, None] * 3 + band[None, :]).view(1, grid, grid, 1).float()  # 1, H, W, 1
    ids = window_partition(region, window).squeeze(-1)  # nW, N
    diff = ids[:, None, :] - ids[:, :, None]  # nW, N, N
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)
