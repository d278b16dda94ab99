"""Best-on-dev model selection, shared by every training loop of the package.

NOTE(official-code): the authors pick the epoch with the best *test* score. Every loop here
keeps the epoch with the best score on a validation split (the first such epoch on ties) and
can stop after ``patience`` epochs without improvement; the test split is scored once, after.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class BestOnDev:
    """The best epoch so far by dev score (higher is better), and its report and weights.

    ``update`` once per epoch; with ``keep_weights`` a copy of the model's state dict at the
    best epoch is kept for :meth:`restore`. ``patience`` 0 never stops early.
    """

    patience: int = 0
    keep_weights: bool = False
    best_epoch: int = 0
    best_score: float = -1.0
    best_report: dict = field(default_factory=dict)
    bad_epochs: int = 0
    _weights: dict[str, Any] | None = field(default=None, repr=False)

    def update(
        self, epoch: int, score: float, report: dict | None = None, model: nn.Module | None = None
    ) -> bool:
        """Record an epoch's dev score; True when it is the new best."""
        improved = score > self.best_score
        if improved:
            self.best_epoch, self.best_score = epoch, score
            self.best_report = dict(report or {})
            self.bad_epochs = 0
            if self.keep_weights and model is not None:
                self._weights = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
        return improved

    @property
    def exhausted(self) -> bool:
        """True when ``patience`` epochs in a row brought no improvement."""
        return bool(self.patience) and self.bad_epochs >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights back into ``model`` (needs ``keep_weights``)."""
        if self._weights is None:
            raise RuntimeError("no weights kept: construct BestOnDev(keep_weights=True)")
        model.load_state_dict(self._weights)

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores to resume the selection (weights live in their own file)."""
        return {
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "best_dev": self.best_report,
            "bad_epochs": self.bad_epochs,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], patience: int = 0) -> BestOnDev:
        return cls(
            patience=patience,
            best_epoch=int(state["best_epoch"]),
            best_score=float(state["best_score"]),
            best_report=dict(state["best_dev"]),
            bad_epochs=int(state["bad_epochs"]),
        )
