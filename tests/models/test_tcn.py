"""The TCN is causal: the output at frame t reads frames 0..t only, and it does read them."""

from __future__ import annotations

import pytest
import torch

from deepmsi.models.tcn import TCN

pytestmark = pytest.mark.usefixtures("one_thread")


def _steps(tcn: TCN, x: torch.Tensor) -> torch.Tensor:
    """Every frame's output [B, C_last, F] (the model itself returns only the last one)."""
    return tcn.blocks(x.transpose(1, 2))


@pytest.mark.parametrize("t", [0, 3, 6])
def test_output_at_t_ignores_later_frames_and_reads_frame_t(t):
    torch.manual_seed(0)
    tcn = TCN(in_dim=5, channels=(8, 8, 8), kernel=3).eval()
    x = torch.randn(2, 8, 5)  # [B, F, C]
    later = x.clone()
    later[:, t + 1 :] = torch.randn_like(later[:, t + 1 :]) * 10
    now = x.clone()
    now[:, t] += 5.0
    with torch.no_grad():
        base, moved_later, moved_now = _steps(tcn, x), _steps(tcn, later), _steps(tcn, now)
    torch.testing.assert_close(moved_later[..., : t + 1], base[..., : t + 1], rtol=0, atol=0)
    assert not torch.allclose(moved_now[..., t], base[..., t]), "frame t must reach output t"
    torch.testing.assert_close(moved_now[..., :t], base[..., :t], rtol=0, atol=0)


def test_the_summary_is_the_last_frame_and_sees_the_first():
    torch.manual_seed(0)
    tcn = TCN(in_dim=4, channels=(6, 6, 6), kernel=3).eval()
    x = torch.randn(3, 8, 4)
    first = x.clone()
    first[:, 0] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(tcn(x), _steps(tcn, x)[..., -1])
        assert not torch.allclose(tcn(first), tcn(x)), "8 frames lie inside the receptive field"
