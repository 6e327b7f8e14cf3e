"""All-numeric CSVs, streamed: parsed once into float32 block files in a scratch folder.

One pass with NumPy's C reader, a block of rows at a time, checks every value and writes
the features as block files under ``TMPDIR`` (else ``/tmp``; about the CSV's size on disk,
removed with the data); only the labels (one value per row) and row numbers are kept in
memory, and ``tf.data`` reads the blocks back per epoch. Not a ``data.format`` of its own:
the ``csv`` reader tries it first.
"""

from __future__ import annotations

import csv
import itertools
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kerasop.events import EXIT_INTERNAL
from kerasop.spec import DataSpec
from kerasop.store import InputKind
from kerasop_trainer.data.splits import Raw, StreamedSplit
from kerasop_trainer.errors import TrainerError

# Features per block file, rows per shuffle window.
STREAM_BLOCK_BYTES = 2 << 20
SHUFFLE_WINDOW_ROWS = 4096


def _scratch_error(exc: OSError) -> TrainerError:
    return TrainerError(
        f"cannot write the CSV's scratch copy under {tempfile.gettempdir()} ({exc}); set "
        "TMPDIR to a writable folder with room for about the CSV's size",
        EXIT_INTERNAL,
    )


class CsvStream:
    """The float32 feature rows of an all-numeric CSV, as block files in a scratch folder.

    Pass 1 (:func:`read_numeric_csv`) appends one file per block of parsed rows (about
    ``STREAM_BLOCK_BYTES``); ``starts[b]`` is block ``b``'s first row. The folder is
    removed when this object is garbage collected (the splits of a :class:`LoadedData`
    hold it) or at exit.

    :meth:`dataset` reads the blocks holding a split's rows with ``tf.data``
    (``tf.io.read_file`` + ``decode_raw``, in parallel), keeps that split's rows and joins
    their labels by row number. Training shuffles in two bounded steps: the order of the
    blocks (all of them, a new order every epoch), then the rows within windows of
    ``SHUFFLE_WINDOW_ROWS`` consecutive rows of that order (a window spans several blocks
    from anywhere in the file). Memory stays a few windows and blocks whatever the file's
    size; the CSV is parsed once, so every epoch costs the same (no first-epoch parse).
    """

    def __init__(self, n_features: int) -> None:
        try:
            self.folder = Path(tempfile.mkdtemp(prefix="kerasop-csv-"))
        except OSError as exc:
            raise _scratch_error(exc) from None
        self.n_features = n_features
        self.starts: list[int] = [0]
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.folder), True)

    @property
    def rows(self) -> int:
        return self.starts[-1]

    @property
    def blocks(self) -> int:
        return len(self.starts) - 1

    def close(self) -> None:
        """Remove the scratch files now."""
        self._cleanup()

    def block_path(self, block: int | np.integer[Any]) -> str:
        return str(self.folder / f"{block:07d}.f32")

    def append(self, x: np.ndarray) -> None:
        """Write the next block of rows (rows x ``n_features``)."""
        assert x.ndim == 2 and x.shape[1] == self.n_features
        try:
            np.ascontiguousarray(x, dtype="<f4").tofile(self.block_path(self.blocks))
        except OSError as exc:
            self.close()
            raise _scratch_error(exc) from None
        self.starts.append(self.rows + len(x))

    def read_block(self, block: int) -> np.ndarray:
        return np.fromfile(self.block_path(block), dtype="<f4").reshape(-1, self.n_features)

    def _by_block(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """``(block, row numbers within it)`` for the blocks holding sorted ``rows``."""
        cut = np.searchsorted(rows, self.starts)
        for block in range(self.blocks):
            if cut[block + 1] > cut[block]:
                yield block, rows[cut[block] : cut[block + 1]] - self.starts[block]

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """These rows' features (in the order given), as a new float32 array."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        parts = [self.read_block(b)[local] for b, local in self._by_block(rows[order])]
        out = np.empty((len(rows), self.n_features), dtype=np.float32)
        if parts:
            out[order] = np.concatenate(parts)
        return out

    def mean_variance(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Column mean and variance (float64) of ``rows``, a block at a time (Chan et al.)."""
        n = 0
        mean = np.zeros(self.n_features, dtype=np.float64)
        m2 = np.zeros(self.n_features, dtype=np.float64)
        for block, local in self._by_block(np.sort(np.asarray(rows, dtype=np.int64))):
            x = self.read_block(block)[local]
            k = len(x)
            block_mean = x.sum(axis=0, dtype=np.float64) / k
            block_m2 = np.square(x - block_mean).sum(axis=0)
            delta = block_mean - mean
            total = n + k
            mean += delta * (k / total)
            m2 += block_m2 + np.square(delta) * (n * k / total)
            n = total
        return mean, m2 / n

    def dataset(
        self,
        rows: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        drop_remainder: bool,
    ) -> Any:
        """Batches of ``(features, label)`` for ``rows`` (labels ``y`` in the same order)."""
        import tensorflow as tf

        order = np.argsort(rows, kind="stable")
        rows, y = np.asarray(rows, dtype=np.int64)[order], y[order]
        cut = np.searchsorted(rows, self.starts)
        used = np.flatnonzero(cut[1:] > cut[:-1])
        block_of_row = np.searchsorted(self.starts, rows, side="right") - 1
        local = tf.constant((rows - np.asarray(self.starts)[block_of_row]).astype(np.int32))
        labels = tf.constant(y)
        features = self.n_features

        def read(path: Any, first: Any, last: Any) -> tuple[Any, Any]:
            x = tf.reshape(tf.io.decode_raw(tf.io.read_file(path), tf.float32), [-1, features])
            return tf.gather(x, local[first:last]), labels[first:last]

        ds = tf.data.Dataset.from_tensor_slices(
            ([self.block_path(b) for b in used], cut[used], cut[used + 1])
        )
        if shuffle:
            ds = ds.shuffle(len(used), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle:

            def mix(window: tuple[Any, Any], key: Any) -> tuple[Any, Any]:
                x, yy = window
                perm = tf.random.experimental.stateless_shuffle(
                    tf.range(tf.shape(x)[0]), seed=tf.stack([key, tf.constant(seed, tf.int64)])
                )
                return tf.gather(x, perm), tf.gather(yy, perm)

            keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip((ds.rebatch(SHUFFLE_WINDOW_ROWS), keys))
            ds = ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.rebatch(batch_size, drop_remainder=drop_remainder)
        n = len(rows)
        steps = n // batch_size if drop_remainder else -(-n // batch_size)
        return ds.apply(tf.data.experimental.assert_cardinality(steps))


# How read_numeric_csv reads a CSV as the csv module does: quotes, no comments.
_LOADTXT: dict[str, Any] = {"delimiter": ",", "comments": None, "quotechar": '"'}


def read_numeric_csv(spec: DataSpec, path: Path) -> Raw | None:
    """An all-numeric table streamed to float32 block files (:class:`CsvStream`), or None.

    One pass, a block of lines at a time (about ``STREAM_BLOCK_BYTES`` of features):
    NumPy's C reader parses the block, every value is checked, the features go to the
    next block file and the label column stays in memory. Memory is a block or two
    whatever the file's size; the Python reader (:func:`~kerasop_trainer.data.readers.common.read_table`) takes ~20x the
    time and memory of NumPy. Anything unusual (a non-number, a ragged row, a non-finite
    value, leading blank lines) returns None, and the Python reader then reads the whole
    file and names the problem (column and line) as before.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
        header = [c.strip() for c in next(csv.reader([first]))]
    except (OSError, UnicodeDecodeError, csv.Error, StopIteration):
        return None
    if len(header) < 2 or len(set(header)) != len(header) or spec.label_column not in header:
        return None
    label_idx = header.index(spec.label_column)
    if spec.feature_columns is not None:
        if not spec.feature_columns or any(c not in header for c in spec.feature_columns):
            return None
        feature_idx = [header.index(c) for c in spec.feature_columns]
    else:
        feature_idx = [i for i in range(len(header)) if i != label_idx]
    all_columns = feature_idx == [i for i in range(len(header)) if i != label_idx]
    lines_per_block = max(64, STREAM_BLOCK_BYTES // (4 * len(header)))
    stream = CsvStream(len(feature_idx))
    label_blocks: list[np.ndarray] = []
    try:
        with open(path, encoding="utf-8-sig") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no data", "blank line skipped"
            fh.readline()  # the header
            while lines := list(itertools.islice(fh, lines_per_block)):
                # No usecols: NumPy then rejects a row whose field count differs.
                table = np.loadtxt(lines, dtype=np.float32, ndmin=2, **_LOADTXT)
                if not table.size:  # blank lines only
                    continue
                if table.shape[1] != len(header) or not np.isfinite(table).all():
                    stream.close()
                    return None
                stream.append(
                    np.delete(table, label_idx, axis=1) if all_columns else table[:, feature_idx]
                )
                label_blocks.append(table[:, label_idx].copy())
    except (OSError, ValueError, UnicodeDecodeError):
        stream.close()
        return None
    if not stream.rows:
        stream.close()
        return None
    label_values = np.concatenate(label_blocks)
    labels: np.ndarray
    # Integers (class indices) as the Python reader would parse them; float32 holds them
    # exactly up to 2**24.
    if np.all(label_values == np.round(label_values)) and np.abs(label_values).max() < 2**24:
        labels = label_values.astype(np.int64)
    else:  # fractional: the label strings as written, as the Python reader gives them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            raw = np.loadtxt(
                path, dtype=str, usecols=[label_idx], ndmin=1, skiprows=1,
                encoding="utf-8-sig", **_LOADTXT,
            )  # fmt: skip
        labels = np.char.strip(raw)
    names = [header[i] for i in feature_idx]
    rows = np.arange(stream.rows, dtype=np.int64)
    return Raw(
        kind=InputKind.TABULAR,
        shape=(len(names),),
        examples=StreamedSplit(y=labels, stream=stream, rows=rows),
        where=str(path),
        feature_names=names,
    )
