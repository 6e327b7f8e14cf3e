"""Reading ``spec.data``: the training and validation reads, labels encoded, the
validation split taken, then what the model learns from the training split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerasop.events import EXIT_BAD_DATA
from kerasop.spec import DataSpec
from kerasop.store import InputKind
from kerasop_trainer.data import statistics
from kerasop_trainer.data.labels import encode_labels
from kerasop_trainer.data.loaded import ImageInput, LoadedData, ModelInput
from kerasop_trainer.data.readers import read
from kerasop_trainer.data.readers import text as text_reader
from kerasop_trainer.data.sources import data_file
from kerasop_trainer.data.splits import Raw, Split, TextSplit
from kerasop_trainer.errors import TrainerError


def load_data(
    spec: DataSpec, data_root: str | os.PathLike[str], loss: str, seed: int = 0
) -> LoadedData:
    """Read and check ``spec``'s training and validation data (paths under ``data_root``,
    or URIs)."""
    root = Path(data_root)
    train_raw = read(spec, data_file(root, spec.path, spec.store), "training")
    val_raw = None
    if spec.validation_path is not None:
        val_file = data_file(root, spec.validation_path, spec.store)
        val_raw = read(spec, val_file, "validation", train_raw)
        _check_same_input(train_raw, val_raw)
    elif spec.validation_split is not None:
        _split_size(len(train_raw.labels), spec.validation_split)  # fail before label checks

    labels, y_train, y_val = encode_labels(
        train_raw, val_raw, loss, check_classes=val_raw is not None
    )
    train = train_raw.examples.with_labels(y_train)
    validation = None
    if val_raw is not None:
        assert y_val is not None
        validation = val_raw.examples.with_labels(y_val)
    elif spec.validation_split is not None:
        n = len(train)
        n_val = _split_size(n, spec.validation_split)
        order = np.random.default_rng(seed).permutation(n)
        validation = train.take(np.sort(order[:n_val]))
        train = train.take(np.sort(order[n_val:]))

    return LoadedData(
        input=_model_input(spec, train_raw, train),
        input_shape=train_raw.shape,
        labels=labels,
        train=train,
        validation=validation,
    )


def _model_input(spec: DataSpec, raw: Raw, train: Split) -> ModelInput:
    """What the model learns from the training split besides the labels."""
    if raw.kind is InputKind.TABULAR:
        return statistics.fit_table(raw, train, spec.normalize)
    if raw.kind is InputKind.TEXT:
        assert isinstance(train, TextSplit)
        return text_reader.fit(train, spec)
    return ImageInput(raw.image)


def _split_size(n: int, fraction: float) -> int:
    n_val = round(n * fraction)
    if n_val < 1 or n - n_val < 1:
        raise TrainerError(
            f"validationSplit {fraction} of {n} rows leaves {n - n_val} training and "
            f"{n_val} validation rows; both need at least one",
            EXIT_BAD_DATA,
        )
    return n_val


def _check_same_input(train: Raw, val: Raw) -> None:
    if train.shape != val.shape:
        raise TrainerError(
            f"validation data {val.where} has input shape {val.shape}, "
            f"the training data {train.shape}",
            EXIT_BAD_DATA,
        )
    if train.feature_names is not None and train.feature_names != val.feature_names:
        missing = [c for c in train.feature_names if c not in (val.feature_names or [])]
        detail = f" (missing: {', '.join(missing[:10])})" if missing else " (different order)"
        raise TrainerError(
            f"validation data {val.where} has different feature columns than the training "
            f"data{detail}",
            EXIT_BAD_DATA,
        )
