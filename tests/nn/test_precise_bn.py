"""Precise BatchNorm: statistics of the final weights, computed without dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepmsi.nn.precise_bn import recompute_batchnorm

pytestmark = pytest.mark.usefixtures("one_thread")


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def test_running_statistics_are_those_of_the_whole_pass_without_dropout() -> None:
    net = _net()
    net.train()
    for _ in range(3):  # stale statistics from "earlier weights"
        net(torch.randn(8, 5) * 10 + 3)
    data = [torch.randn(6, 5) for _ in range(4)]
    assert recompute_batchnorm(net, data, _run) == 4
    hidden = torch.cat([net[0](x) for x in data]).detach()  # what BatchNorm saw: no dropout
    bn = net[2]
    torch.testing.assert_close(bn.running_mean, hidden.mean(0))
    batch_vars = torch.stack([net[0](x).detach().var(0) for x in data])  # unbiased, per batch
    torch.testing.assert_close(bn.running_var, batch_vars.mean(0))
    assert not net.training and not bn.training and bn.momentum == 0.1


def test_no_batches_leaves_the_statistics_alone() -> None:
    net = _net()
    net.train()
    net(torch.randn(8, 5))
    before = {k: v.clone() for k, v in net[2].state_dict().items()}
    assert recompute_batchnorm(net, [], _run) == 0
    for k, v in net[2].state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_a_model_without_batchnorm_is_untouched() -> None:
    net = nn.Sequential(nn.Linear(3, 2))
    assert recompute_batchnorm(net, [torch.randn(2, 3)], _run) == 0
