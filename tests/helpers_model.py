"""Reference implementations shared by the model tests (slow, obviously-correct loops)."""

from __future__ import annotations

import torch


def naive_shift_mask(grid: int, window: int, shift: int) -> torch.Tensor:
    """Reference built from first principles: after rolling by -shift, the token at rolled row r
    came from row (r + shift) % grid; two tokens of one window may attend to each other only when
    neither or both wrapped around, on each axis."""
    n = window * window
    windows = []
    for wr in range(grid // window):
        for wc in range(grid // window):
            cells = [
                (wr * window + i, wc * window + j) for i in range(window) for j in range(window)
            ]
            m = torch.zeros(n, n)
            for a, (ra, ca) in enumerate(cells):
                for b, (rb, cb) in enumerate(cells):
                    wrap_a = (ra + shift >= grid, ca + shift >= grid)
                    wrap_b = (rb + shift >= grid, cb + shift >= grid)
                    m[a, b] = 0.0 if wrap_a == wrap_b else -100.0
            windows.append(m)
    return torch.stack(windows)
