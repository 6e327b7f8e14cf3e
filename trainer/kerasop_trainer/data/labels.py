"""Labels, encoded as the loss needs them.

``binary_crossentropy`` needs exactly two classes (0/1 or two strings, sorted); the
categorical losses take any number of classes (class names are the sorted distinct labels;
integers sort numerically); ``mean_squared_error`` and ``mean_absolute_error`` need
numeric labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kerasop.events import EXIT_BAD_DATA, EXIT_MODEL_MISMATCH
from kerasop_trainer.data.splits import Raw
from kerasop_trainer.errors import TrainerError

REGRESSION_LOSSES = ("mean_squared_error", "mean_absolute_error")

OutputKind = Literal["binary", "multiclass", "regression"]
Encoding = Literal["binary", "sparse", "onehot", "regression"]


@dataclass
class Labels:
    """How labels were encoded for the loss."""

    kind: OutputKind
    encoding: Encoding
    units: int  # output units the model must have
    class_names: list[str] | None = None


def encode_labels(
    train: Raw, val: Raw | None, loss: str, check_classes: bool
) -> tuple[Labels, np.ndarray, np.ndarray | None]:
    if loss in REGRESSION_LOSSES:
        y_train = _regression_targets(train)
        y_val = _regression_targets(val) if val is not None else None
        if y_val is not None and y_val.shape[1:] != y_train.shape[1:]:
            raise TrainerError(
                f"validation labels have shape {y_val.shape[1:]}, training labels "
                f"{y_train.shape[1:]}",
                EXIT_BAD_DATA,
            )
        return Labels("regression", "regression", int(y_train.shape[1])), y_train, y_val

    names, idx_train = _class_indices(train)
    idx_val = None
    if val is not None:
        val_names, val_idx_local = _class_indices(val)
        if check_classes and set(val_names) != set(names):
            extra = sorted(set(val_names) - set(names))
            missing = sorted(set(names) - set(val_names))
            parts = []
            if extra:
                parts.append(f"classes not in the training data: {', '.join(extra[:20])}")
            if missing:
                parts.append(f"no examples of: {', '.join(missing[:20])}")
            raise TrainerError(
                f"validation data {val.where} has different classes than the training data "
                f"{train.where} ({'; '.join(parts)})",
                EXIT_BAD_DATA,
            )
        remap = np.array([names.index(n) for n in val_names], dtype=np.int64)
        idx_val = remap[val_idx_local]

    k = len(names)
    if k < 2:
        raise TrainerError(
            f"training data {train.where} has only one class ({names[0]}); "
            "classification needs at least two",
            EXIT_BAD_DATA,
        )
    shown = ", ".join(names[:10]) + (", ..." if k > 10 else "")
    if loss == "binary_crossentropy":
        if k != 2:
            raise TrainerError(
                f"binary_crossentropy needs exactly 2 classes; the labels have {k} ({shown}): "
                "use sparse_categorical_crossentropy or categorical_crossentropy",
                EXIT_MODEL_MISMATCH,
            )
        labels = Labels("binary", "binary", 1, names)

        def enc(i: np.ndarray) -> np.ndarray:
            return i.astype(np.float32)[:, None]

    elif loss == "sparse_categorical_crossentropy":
        labels = Labels("multiclass", "sparse", k, names)

        def enc(i: np.ndarray) -> np.ndarray:
            return i.astype(np.int32)

    else:  # categorical_crossentropy
        labels = Labels("multiclass", "onehot", k, names)

        def enc(i: np.ndarray) -> np.ndarray:
            onehot: np.ndarray = np.eye(k, dtype=np.float32)[i]
            return onehot

    return labels, enc(idx_train), (enc(idx_val) if idx_val is not None else None)


def _class_indices(raw: Raw) -> tuple[list[str], np.ndarray]:
    """Sorted class names and each row's index into them."""
    y = raw.labels
    if raw.classes is not None:  # imageFolder: every class folder is a class
        names = list(raw.classes)
        lookup = {n: i for i, n in enumerate(names)}
        return names, np.array([lookup[v] for v in y], dtype=np.int64)
    if y.ndim == 2:  # npz one-hot / probabilities
        if y.shape[1] == 1:
            y = y[:, 0]
        else:
            return [str(i) for i in range(y.shape[1])], np.argmax(y, axis=1).astype(np.int64)
    ints = _as_ints(y)
    if ints is not None:
        values, idx = np.unique(ints, return_inverse=True)
        return [str(int(v)) for v in values], idx.astype(np.int64)
    if y.dtype.kind == "f":
        raise TrainerError(
            f"{raw.where}: classification labels must be integers or strings, found fractional "
            "numbers (use mean_squared_error or mean_absolute_error for regression)",
            EXIT_BAD_DATA,
        )
    strings = np.char.strip(y.astype(str))
    values, idx = np.unique(strings, return_inverse=True)
    return [str(v) for v in values], idx.astype(np.int64)


def _as_ints(y: np.ndarray) -> np.ndarray | None:
    if y.dtype.kind in "biu":
        return y.astype(np.int64)
    try:
        f = y.astype(np.float64)
    except ValueError:
        return None
    if np.all(np.isfinite(f)) and np.all(f == np.round(f)):
        return f.astype(np.int64)
    return None


def _regression_targets(raw: Raw) -> np.ndarray:
    y = raw.labels
    if y.dtype.kind in "biuf":
        out = y.astype(np.float32)
    else:
        stripped = np.char.strip(y.astype(str))
        try:
            out = stripped.astype(np.float32)
        except ValueError:
            for i, v in enumerate(stripped):
                try:
                    float(v)
                except ValueError:
                    raise TrainerError(
                        f"{raw.where}: regression labels must be numbers; row {i + 1} has "
                        f"{v[:40]!r} (for classes use a crossentropy loss)",
                        EXIT_BAD_DATA,
                    ) from None
            raise
    if not np.isfinite(out).all():
        raise TrainerError(
            f"{raw.where}: regression labels contain non-finite values", EXIT_BAD_DATA
        )
    return out.reshape(len(out), -1)
