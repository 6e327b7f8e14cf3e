"""What a table's preprocessing layers take from the training split: the numeric columns'
mean and variance (``Normalization``, with ``data.normalize``) and the categorical columns'
vocabularies (``StringLookup``)."""

from __future__ import annotations

import numpy as np

from kerasop_trainer.data.loaded import TableInput
from kerasop_trainer.data.splits import ArraySplit, Raw, Split, StreamedSplit


def fit_table(raw: Raw, train: Split, normalize: bool) -> TableInput:
    """Mean/variance of the numeric columns and the categorical vocabularies (training split)."""
    table = TableInput(raw.feature_names, categorical_columns=list(raw.categorical))
    if isinstance(train, StreamedSplit):  # streamed: read back a block at a time
        table.standardize = normalize
        table.feature_mean, table.feature_variance = train.stream.mean_variance(train.rows)
        return table
    assert isinstance(train, ArraySplit)
    x = train.x
    if x.shape[1] > 0:
        table.standardize = normalize
        table.feature_mean, table.feature_variance = _mean_variance(x)
    if train.cat is not None:
        table.vocabularies = [
            sorted(set(train.cat[:, j].tolist())) for j in range(train.cat.shape[1])
        ]
    return table


def _mean_variance(x: np.ndarray, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and variance in float64, a block of rows at a time (no float64 copy of x)."""
    mean = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, len(x), rows):
        mean += x[start : start + rows].sum(axis=0, dtype=np.float64)
    mean /= len(x)
    squares = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, len(x), rows):
        squares += np.square(x[start : start + rows] - mean).sum(axis=0)
    return mean, squares / len(x)
