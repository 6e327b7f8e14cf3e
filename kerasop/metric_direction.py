"""Which way a metric improves: one rule for the rollout gate and the trainer.

The rule is public: the ``maxRegression`` field of the CRD describes it (names
containing loss, error, mae, mse are worse when higher, the others when lower), and
the trainer's early stopping must agree with it, or a version that early stopping
kept as best could be the one the gate calls worse.
"""

from __future__ import annotations

LOWER_IS_BETTER = ("loss", "error", "mae", "mse")


def lower_is_better(name: str) -> bool:
    """``val_loss``, ``mean_squared_error``: True; ``val_accuracy``, ``auc``: False."""
    return any(word in name for word in LOWER_IS_BETTER)
