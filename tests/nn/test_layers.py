"""Generic blocks: windows and shifted-window masks, MLPs, projection head, drop path."""

from __future__ import annotations

import pytest
import torch
from helpers_model import naive_shift_mask

from deepmsi.nn import (
    DropPath,
    MlpHead,
    ProjectionHead,
    fit_window,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "grid, window, shift",
    [(16, 8, 4), (14, 7, 3), (12, 6, 3), (10, 5, 2), (6, 3, 1), (8, 4, 2), (9, 3, 1), (4, 2, 1)],
)
def test_shifted_window_mask_matches_naive_for_every_grid(grid: int, window: int, shift: int):
    got = shifted_window_mask(grid, window, shift)
    assert got.shape == ((grid // window) ** 2, window * window, window * window)
    torch.testing.assert_close(got, naive_shift_mask(grid, window, shift))


def test_shifted_window_mask_none_without_shift_and_rejects_bad_geometry() -> None:
    assert shifted_window_mask(8, 4, 0) is None
    with pytest.raises(ValueError):
        shifted_window_mask(10, 4, 2)  # 4 does not tile 10
    with pytest.raises(ValueError):
        shifted_window_mask(8, 4, 4)


@pytest.mark.parametrize(
    "grid, window, expected",
    [(16, 8, 8), (14, 8, 7), (12, 8, 6), (10, 8, 5), (5, 8, 5), (6, 4, 3), (4, 4, 4), (1, 4, 1)],
)
def test_fit_window_picks_the_largest_tiling_window(grid: int, window: int, expected: int) -> None:
    assert fit_window(grid, window) == expected


def test_fit_window_rejects_prime_grids_larger_than_the_window() -> None:
    with pytest.raises(ValueError, match="no window"):
        fit_window(7, 4)


def test_window_partition_matches_loops_and_reverses() -> None:
    x = torch.randn(2, 6, 6, 5)
    w = 3
    windows = window_partition(x, w)
    expected = torch.stack(
        [
            x[b, i : i + w, j : j + w].reshape(w * w, 5)
            for b in range(2)
            for i in range(0, 6, w)
            for j in range(0, 6, w)
        ]
    )
    torch.testing.assert_close(windows, expected)
    torch.testing.assert_close(window_reverse(windows, w, 6, 6), x)


def test_projection_head_is_clip_style() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(7, 5).eval()
    x = torch.randn(3, 7)
    p = head.projection(x)
    ref = torch.nn.functional.layer_norm(
        p + head.fc(torch.nn.functional.gelu(p)), (5,), head.norm.weight, head.norm.bias
    )
    torch.testing.assert_close(head(x), ref)


def test_mlp_head_shapes_and_a_training_batch_of_one() -> None:
    head = MlpHead(6, (8, 4), 3, dropout=0.1).train()
    assert head(torch.randn(5, 6)).shape == (5, 3)
    out = head(torch.randn(1, 6))  # plain BatchNorm1d raises here
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_drop_path_identity_in_eval_and_unbiased_in_training() -> None:
    torch.manual_seed(0)
    dp = DropPath(0.25)
    x = torch.ones(4000, 3)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    rows = y[:, 0]
    assert (
        torch.isclose(rows, torch.tensor(0.0))
        .logical_or(torch.isclose(rows, torch.tensor(4 / 3)))
        .all()
    )
    assert (y == y[:, :1]).all()  # whole samples dropped
    assert abs(rows.mean().item() - 1.0) < 0.05
