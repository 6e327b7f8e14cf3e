"""Raw rows for models that take strings: tables with categorical columns and text.

The trainer puts such preprocessing inside the model (``StringLookup`` per categorical
column, ``TextVectorization`` for text), so the model takes the raw values, has named
or string inputs, and no ``model.onnx``: the Keras engine serves it (engines.py).

A request's rows become one object array ``[N, columns]`` in the column order of
``metadata.json`` (``input.columns``, else the numeric ``featureNames`` then the
``categorical`` columns; text: one column). That array goes through the batcher like
any other batch; the engine splits it into the model's inputs with :meth:`to_model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ClientError

NUMERIC_INPUT = "features"  # the model input of a table's numeric columns (the trainer's name)
TEXT_INPUT = "text"


@dataclass(frozen=True)
class RawColumn:
    name: str  # what requests call it
    string: bool  # takes strings (categorical, text) or numbers
    model_input: str  # the Keras input it feeds


@dataclass(frozen=True)
class RawLayout:
    """The raw columns a string-taking model reads, in request order."""

    kind: str  # "table" | "text"
    columns: tuple[RawColumn, ...]

    @classmethod
    def from_metadata(cls, meta_in: dict[str, Any]) -> RawLayout | None:
        """The layout ``metadata.json``'s input describes; ``None`` for numeric/image models."""
        if meta_in.get("kind") == "text" or (
            meta_in.get("dtype") == "string" and not meta_in.get("categorical")
        ):
            column = str((meta_in.get("text") or {}).get("column") or TEXT_INPUT)
            return cls("text", (RawColumn(column, True, TEXT_INPUT),))
        categorical = meta_in.get("categorical")
        if not categorical:
            return None
        inputs = {str(c["column"]): str(c.get("input") or c["column"]) for c in categorical}
        numeric = [str(n) for n in meta_in.get("featureNames") or []]
        order = [str(c) for c in meta_in.get("columns") or [*numeric, *inputs]]
        columns = tuple(
            RawColumn(c, True, inputs[c]) if c in inputs else RawColumn(c, False, NUMERIC_INPUT)
            for c in order
        )
        return cls("table", columns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def describe(self) -> str:
        if self.kind == "text":
            return "one string per row"
        return "one row per example: " + ", ".join(
            f"{c.name} ({'string' if c.string else 'number'})" for c in self.columns
        )

    # -- requests -------------------------------------------------------------

    def rows(self, items: Any, what: str) -> np.ndarray:
        """Row-format items (lists in column order, ``{column: value}``, or for text a
        plain string) as the ``[N, columns]`` batch; 400 for anything else."""
        if not isinstance(items, list) or not items:
            raise ClientError(f"{what} must be a non-empty list with one item per row")
        out = np.empty((len(items), len(self.columns)), dtype=object)
        for i, item in enumerate(items):
            out[i] = self._row(item, f"{what}[{i}]")
        return out

    def _row(self, item: Any, what: str) -> list[Any]:
        if isinstance(item, dict):
            if set(item) == set(self.names):
                item = [item[n] for n in self.names]
            elif self.kind == "text" and len(item) == 1:
                (item,) = item.values()
            else:
                raise ClientError(
                    f"{what}: the keys {sorted(map(str, item))} are not this model's columns"
                    f" {list(self.names)}"
                )
        if self.kind == "text" and not isinstance(item, list):
            item = [item]
        if not isinstance(item, list) or len(item) != len(self.columns):
            raise ClientError(f"{what}: expected {self.describe()}")
        return [self._value(v, c, what) for v, c in zip(item, self.columns, strict=True)]

    @staticmethod
    def _value(value: Any, column: RawColumn, what: str) -> Any:
        if column.string:
            if not isinstance(value, str):
                raise ClientError(
                    f"{what}: column '{column.name}' takes strings, got {type(value).__name__}"
                )
            return value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or abs(value) > np.finfo(np.float32).max
        ):
            raise ClientError(
                f"{what}: column '{column.name}' takes finite numbers, got {value!r:.40}"
            )
        return value

    def from_columns(self, columns: dict[str, Any], what: str) -> np.ndarray:
        """Columnar values ``{column: [v1, v2, ...]}`` as the ``[N, columns]`` batch."""
        names = set(self.names)
        if self.kind == "text" and len(columns) == 1:
            columns = {self.columns[0].name: next(iter(columns.values()))}
        if set(columns) != names:
            raise ClientError(
                f"{what}: give every column of this model, {list(self.names)};"
                f" got {sorted(map(str, columns))}"
            )
        values = [columns[n] for n in self.names]
        values = [v if isinstance(v, list) else None for v in values]
        lengths = {len(v) for v in values if v is not None}
        if any(v is None for v in values) or len(lengths) != 1:
            raise ClientError(f"{what}: columns must be flat lists of one length")
        flat = [[x[0] if isinstance(x, list) and len(x) == 1 else x for x in v] for v in values]
        return self.rows([list(r) for r in zip(*flat, strict=True)], what)

    # -- the model --------------------------------------------------------------

    def to_model(self, batch: np.ndarray) -> Any:
        """The model's inputs for a ``[N, columns]`` batch: a dict of named inputs
        (tables) or the ``[N, 1]`` strings (text)."""
        if self.kind == "text":
            return batch[:, :1].astype(str)
        out: dict[str, np.ndarray] = {}
        numeric = [j for j, c in enumerate(self.columns) if not c.string]
        if numeric:
            out[NUMERIC_INPUT] = batch[:, numeric].astype(np.float32)
        for j, c in enumerate(self.columns):
            if c.string:
                out[c.model_input] = batch[:, j : j + 1].astype(str)
        return out
