"""``csv``: feature columns and a label column.

An all-numeric table is streamed (:mod:`.csv_stream`); a table with categorical columns is
loaded into memory. A feature column is *categorical* when it is listed in
``data.categoricalColumns`` or when more than half of its training values are not numbers;
every other column is numeric, and a value in it that is not a number fails the job (a
typo or a missing-value marker, not a category).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasop.events import EXIT_BAD_DATA
from kerasop.spec import DataSpec
from kerasop.store import InputKind
from kerasop_trainer.data.readers import csv_stream
from kerasop_trainer.data.readers.common import column, labels_of, read_table
from kerasop_trainer.data.splits import ArraySplit, Raw
from kerasop_trainer.errors import TrainerError


def read(spec: DataSpec, path: Path, role: str, training: Raw | None = None) -> Raw:
    """A table; the ``training`` read's categorical columns fix those of validation."""
    categorical = training.categorical if training is not None else None
    if not spec.categorical_columns and not categorical:
        fast = csv_stream.read_numeric_csv(spec, path)
        if fast is not None:
            return fast
    header, rows, lines = read_table(path, role)
    label_idx = column(header, spec.label_column, path, "label")
    if spec.feature_columns is not None:
        if not spec.feature_columns:
            raise TrainerError("data.featureColumns is empty", EXIT_BAD_DATA)
        feature_idx = [column(header, c, path, "feature") for c in spec.feature_columns]
    else:
        feature_idx = [i for i in range(len(header)) if i != label_idx]
    if not feature_idx:
        raise TrainerError(f"{path} has no feature columns besides the label", EXIT_BAD_DATA)
    names = [header[i] for i in feature_idx]
    table = np.array(rows, dtype=str)
    if categorical is None:
        categorical = _categorical_columns(table, feature_idx, names, spec, path)
    numeric = [(i, n) for i, n in zip(feature_idx, names, strict=True) if n not in categorical]
    cat_idx = [header.index(c) for c in categorical]
    x = _to_float(table[:, [i for i, _ in numeric]], [n for _, n in numeric], lines, path)
    cat = np.char.strip(table[:, cat_idx]) if cat_idx else None
    labels = labels_of(table, label_idx, spec.label_column, lines, path)
    return Raw(
        kind=InputKind.TABULAR,
        shape=(len(numeric),),
        examples=ArraySplit(y=labels, x=x, cat=cat),
        where=str(path),
        feature_names=names,
        categorical=categorical,
    )


def _categorical_columns(
    table: np.ndarray, feature_idx: list[int], names: list[str], spec: DataSpec, path: Path
) -> list[str]:
    """Declared categorical columns, plus those where most values are not numbers."""
    declared = list(spec.categorical_columns or [])
    unknown = [c for c in declared if c not in names]
    if unknown:
        raise TrainerError(
            f"data.categoricalColumns {', '.join(unknown)} are not feature columns of {path}",
            EXIT_BAD_DATA,
        )
    found = []
    for i, name in zip(feature_idx, names, strict=True):
        if name in declared:
            continue
        column = table[:, i]
        try:
            column.astype(np.float64)
            continue
        except ValueError:
            pass
        not_numbers = sum(1 for v in column if not _is_number(v))
        if not_numbers * 2 > len(column):
            found.append(name)
    return [n for n in names if n in declared or n in found]


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _to_float(table: np.ndarray, names: list[str], lines: list[int], path: Path) -> np.ndarray:
    """Parse a string table as float32, naming the first bad column and row."""
    try:
        out = table.astype(np.float64)  # numpy accepts surrounding spaces
    except ValueError:
        for j, name in enumerate(names):
            for i, value in enumerate(table[:, j]):
                try:
                    float(value)
                except ValueError:
                    raise TrainerError(
                        f"{path}: column '{name}' is not numeric: value {value.strip()[:40]!r} "
                        f"at line {lines[i]} (data row {i + 1}); most of its values are "
                        "numbers (list it in data.categoricalColumns if it holds categories)",
                        EXIT_BAD_DATA,
                    ) from None
        raise  # pragma: no cover - astype failed but every cell parsed
    bad = ~np.isfinite(out)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise TrainerError(
            f"{path}: column '{names[j]}' has a non-finite value {table[i, j].strip()!r} "
            f"at line {lines[i]} (data row {i + 1})",
            EXIT_BAD_DATA,
        )
    return out.astype(np.float32)
