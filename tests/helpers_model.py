"""Reference implementations shared by the model tests (slow, obviously-correct loops)."""

from __future__ import annotations

import pytest
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


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run model tests on one intra-op thread: tiny ops gain nothing from two, and on a shared
    2-core machine a second thread waiting at every op's barrier makes them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
