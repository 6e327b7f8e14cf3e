"""The sample resources the operator tests start from (unit and component tiers)."""

from __future__ import annotations

from typing import Any

DENSE_LAYERS = [
    {"type": "Dense", "units": 10, "activation": "relu"},
    {"type": "Dense", "units": 1, "activation": "sigmoid"},
]


def training_job(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A KerasTrainingJob of the article's dense network on ``train.csv``; ``spec`` adds to
    or replaces its top-level spec fields."""
    return {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "data": {"format": "csv", "path": "train.csv"},
            "model": {"layers": [dict(layer) for layer in DENSE_LAYERS]},
            **spec,
        },
    }
