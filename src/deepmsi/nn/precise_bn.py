"""Precise BatchNorm: re-estimate running statistics with the final weights of an epoch.

BatchNorm's running mean and variance are an exponential average over the batches of training,
each computed with the weights of its own step. When the layers below keep moving (a video
backbone learning from scratch), that average describes earlier networks, not the one being
evaluated: on the demo the V-only model reached 56% training accuracy in train mode and 27% in
eval mode on the same clips. Averaging the batch statistics of a pass with frozen weights
(Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021) removes the lag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any]
) -> int:
    """Replace every BatchNorm's running statistics by their average over ``batches``, computed
    with the model in eval mode (no dropout) except for the BatchNorm layers themselves;
    ``forward(model, batch)`` runs one batch. Returns the number of batches used (0: nothing
    changed). The model is left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = [({k: v.clone() for k, v in m.state_dict().items()}, m.momentum) for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
        m.train()
    used = 0
    for batch in batches:
        forward(model, batch)
        used += 1
    for m, (state, momentum) in zip(norms, saved, strict=True):
        m.momentum = momentum
        m.eval()
        if used == 0:
            m.load_state_dict(state)
    return used
