"""Reading training data as ``spec.data`` describes it, failing fast on bad data.

Five formats (``spec.data.format``):

- ``csv``: feature columns and a label column. An all-numeric table is *streamed*
  (:class:`CsvStream`): one pass with NumPy's C reader, a block of rows at a time, checks
  every value and writes the features as float32 block files to a scratch folder (under
  ``TMPDIR``, else ``/tmp``; about the CSV's size on disk, removed with the data); only the
  labels (one value per row) and row numbers are kept in memory, and ``tf.data`` reads the
  blocks back per epoch. A table with categorical columns is loaded into memory. A feature
  column is
  *categorical* when it is listed in ``data.categoricalColumns`` or when more than half of
  its training values are not numbers; every other column is numeric, and a value in it
  that is not a number fails the job (a typo or a missing-value marker, not a category).
  Numeric features are standardized by a ``Normalization`` layer inside the model
  (``data.normalize``, on by default) with the training split's mean and variance;
  categorical ones are looked up in the training split's sorted distinct values.
- ``npz``: arrays ``x`` and ``y`` (loaded into memory; ``x`` may be rows x features or
  images N x H x W [x C]).
- ``imageCsv``: a CSV of image paths (relative to the CSV) and labels.
- ``imageFolder``: one subfolder per class.
- ``text``: a CSV with a text column and a label column. The vocabulary (the training
  split's ``data.text.maxTokens`` most frequent words, lower-cased, punctuation removed,
  split on whitespace: what ``TextVectorization`` does) goes into the model, which takes
  the raw strings. Without ``data.text.sequenceLength`` the texts are cut or padded to a
  length fitted to the training split (:func:`fitted_sequence_length`).

Images are never loaded all at once: only their paths are kept, every file's header is
checked with Pillow up front (so a corrupt file fails the job before training starts),
and ``tf.data`` reads, decodes and resizes them per batch.

Labels follow the loss: ``binary_crossentropy`` needs exactly two classes (0/1 or two
strings, sorted); the categorical losses take any number of classes (class names are the
sorted distinct labels; integers sort numerically); ``mean_squared_error`` and
``mean_absolute_error`` need numeric labels.

Everything here raises :class:`~kerasop_trainer.errors.TrainerError` with
``EXIT_BAD_DATA`` (or ``EXIT_MODEL_MISMATCH`` when the loss cannot fit the labels).
TensorFlow is imported only when a ``tf.data`` pipeline is built.
"""

from __future__ import annotations

import collections
import csv
import itertools
import os
import re
import shutil
import tempfile
import warnings
import weakref
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kerasop.events import EXIT_BAD_DATA, EXIT_INTERNAL, EXIT_MODEL_MISMATCH
from kerasop.spec import DataSpec, ImageSpec
from kerasop_trainer.errors import TrainerError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
# Formats tf.io.decode_image reads (Pillow's names).
DECODABLE_FORMATS = ("PNG", "JPEG", "GIF", "BMP")
REGRESSION_LOSSES = ("mean_squared_error", "mean_absolute_error")
NUMERIC_INPUT = "features"  # input of the numeric columns of a table with categorical ones

OutputKind = Literal["binary", "multiclass", "regression"]
Encoding = Literal["binary", "sparse", "onehot", "regression"]


@dataclass
class Labels:
    """How labels were encoded for the loss."""

    kind: OutputKind
    encoding: Encoding
    units: int  # output units the model must have
    class_names: list[str] | None = None


class Split:
    """One set of examples: in-memory features ``x``, image file ``paths``, or ``rows`` of
    a streamed CSV (``stream``; row numbers into it, the labels ``y`` in the same order).

    A streamed split holds no features: taking rows (a validation split, a worker's shard)
    only selects row numbers. Reading ``x`` of a streamed split reads its rows from the
    scratch files into a new array (small samples and tests; the trainer uses
    :meth:`LoadedData.dataset`).
    """

    def __init__(
        self,
        y: np.ndarray,
        x: np.ndarray | None = None,
        paths: np.ndarray | None = None,
        cat: np.ndarray | None = None,  # csv: categorical columns as strings, rows x columns
        text: np.ndarray | None = None,  # text: one string per example
        rows: np.ndarray | None = None,  # streamed csv: row numbers into ``stream``
        stream: CsvStream | None = None,
    ) -> None:
        self.y, self._x, self.paths, self.cat, self.text = y, x, paths, cat, text
        self.stream = stream
        if stream is not None and rows is None:
            rows = np.arange(stream.rows, dtype=np.int64)
        self.rows = rows

    @property
    def x(self) -> np.ndarray | None:
        if self.stream is not None:
            assert self.rows is not None
            return self.stream.read_rows(self.rows)
        return self._x

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, index: np.ndarray) -> Split:
        return Split(
            y=self.y[index],
            x=None if self._x is None else self._x[index],
            paths=None if self.paths is None else self.paths[index],
            cat=None if self.cat is None else self.cat[index],
            text=None if self.text is None else self.text[index],
            rows=None if self.rows is None else self.rows[index],
            stream=self.stream,
        )


# Streamed CSVs: features per block file, rows per shuffle window.
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

    Pass 1 (:func:`_read_numeric_csv`) appends one file per block of parsed rows (about
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

    def block_path(self, block: int) -> str:
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

    def _by_block(self, rows: np.ndarray):
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

        def read(path, first, last):
            x = tf.reshape(tf.io.decode_raw(tf.io.read_file(path), tf.float32), [-1, features])
            return tf.gather(x, local[first:last]), labels[first:last]

        ds = tf.data.Dataset.from_tensor_slices(
            ([self.block_path(b) for b in used], cut[used], cut[used + 1])
        )
        if shuffle:
            ds = ds.shuffle(len(used), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle:

            def mix(window, key):
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


@dataclass
class LoadedData:
    """Training (and validation) examples plus what the model and metadata need."""

    input_kind: Literal["tabular", "image", "text"]
    input_shape: tuple[int, ...]
    labels: Labels
    train: Split
    validation: Split | None
    feature_names: list[str] | None = None
    image: ImageSpec | None = None
    notes: list[str] = field(default_factory=list)
    # Tables: preprocessing the model does (statistics of the whole training split).
    standardize: bool = False
    feature_mean: np.ndarray | None = None
    feature_variance: np.ndarray | None = None
    categorical_columns: list[str] = field(default_factory=list)
    vocabularies: list[list[str]] = field(default_factory=list)
    # Text: the TextVectorization settings.
    text_vocabulary: list[str] | None = None
    sequence_length: int = 0
    sequence_length_fitted: bool = False  # data.text.sequenceLength unset: fitted to the data
    text_column: str | None = None

    def input_name(self, column: str) -> str:
        """The model input of a categorical column (its name, made a valid identifier)."""
        safe = "".join(c if c.isalnum() or c == "_" else "_" for c in column)
        return safe if safe and not safe[0].isdigit() else f"c_{safe}"

    def features(self, split: Split) -> Any:
        """What the model takes for ``split``: an array, or a dict for mixed tables."""
        if split.text is not None:
            return split.text[:, None]
        if split.cat is None:
            return split.x
        out: dict[str, np.ndarray] = {}
        if split.x is not None and split.x.shape[1] > 0:
            out[NUMERIC_INPUT] = split.x
        for j, column in enumerate(self.categorical_columns):
            out[self.input_name(column)] = split.cat[:, j : j + 1]
        return out

    # ------------------------------------------------------------------ sharding

    def shard(self, index: int, count: int, seed: int) -> LoadedData:
        """This worker's share of the training rows (validation stays whole).

        Every shard has the same number of rows (``len(train) // count``), so all
        workers run the same number of steps; the few left-over rows are dropped.
        """
        if count <= 1:
            return self
        order = np.random.default_rng(seed).permutation(len(self.train))
        per = len(self.train) // count
        if per == 0:
            raise TrainerError(
                f"{len(self.train)} training rows cannot be split over {count} workers",
                EXIT_BAD_DATA,
            )
        mine = np.sort(order[index * per : (index + 1) * per])
        return replace(self, train=self.train.take(mine))

    # ------------------------------------------------------------------ tf.data

    def dataset(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_remainder: bool = False,
    ) -> Any:
        """A batched ``tf.data.Dataset`` of ``(features, label)`` for ``split``.

        ``shuffle``: a new order every epoch. In memory and for images, over all rows; a
        streamed CSV shuffles the order of its block files and the rows within windows of
        ``SHUFFLE_WINDOW_ROWS`` (4,096) rows (:meth:`CsvStream.dataset`).
        """
        import tensorflow as tf

        n = len(split)
        if split.stream is not None:
            assert split.rows is not None
            ds = split.stream.dataset(
                split.rows,
                split.y,
                batch_size,
                shuffle=shuffle,
                seed=seed,
                drop_remainder=drop_remainder,
            )
        elif split.paths is not None:
            assert self.image is not None
            ds = tf.data.Dataset.from_tensor_slices((split.paths, split.y))
            if shuffle:
                ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
            ds = ds.map(
                image_decoder(self.image), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        else:
            # In memory: shuffle row numbers and gather a whole batch at once, as Keras
            # does for arrays (slicing row by row costs more than a small model's step).
            tensors = tf.nest.map_structure(tf.convert_to_tensor, (self.features(split), split.y))
            ds = tf.data.Dataset.range(n)
            if shuffle:
                ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
            ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(
                lambda rows: tf.nest.map_structure(lambda t: tf.gather(t, rows), tensors),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        return ds.prefetch(tf.data.AUTOTUNE)

    # ------------------------------------------------------------------ metadata

    def input_metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.input_kind,
            "shape": list(self.input_shape),
            "dtype": "string" if self.input_kind == "text" else "float32",
        }
        if self.input_kind == "text":
            out["text"] = {
                "column": self.text_column,
                "sequenceLength": self.sequence_length,
                "sequenceLengthFitted": self.sequence_length_fitted,
                "vocabularySize": len(self.text_vocabulary or []),
            }
        if self.input_kind == "tabular" and self.feature_names is not None:
            out["featureNames"] = list(self.feature_names)
        if self.input_kind == "tabular":
            out["standardized"] = self.standardize
        if self.categorical_columns:
            # Several named inputs: the numeric columns as one float vector, each
            # categorical column as one raw string.
            numeric = [n for n in self.feature_names or [] if n not in self.categorical_columns]
            out["featureNames"] = numeric
            out["columns"] = list(self.feature_names or [])  # all, in the CSV's order
            out["categorical"] = [
                {"column": c, "input": self.input_name(c), "values": len(v)}
                for c, v in zip(self.categorical_columns, self.vocabularies, strict=True)
            ]
        if self.input_kind == "image":
            h, w, c = self.input_shape
            out["image"] = {"height": h, "width": w, "channels": c}
        return out

    def output_metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.labels.kind, "shape": [self.labels.units]}
        if self.labels.class_names is not None:
            out["classNames"] = list(self.labels.class_names)
        return out


def image_decoder(image: ImageSpec):
    """``(path, y) -> (float32 HxWxC pixels 0..255, y)``: read, decode, resize (bilinear)."""
    import tensorflow as tf

    size = [image.height, image.width]
    channels = image.channels

    def load(path, y):
        raw = tf.io.read_file(path)
        pixels = tf.io.decode_image(raw, channels=channels, expand_animations=False)
        pixels.set_shape([None, None, channels])
        pixels = tf.cast(pixels, tf.float32)
        # antialias=True: a triangle filter scaled to the size ratio, as Pillow's BILINEAR
        # (which the model server uses) does when shrinking. An image already at the size
        # skips it (resizing to the same size returns the pixels unchanged, ~2 ms later).
        same_size = tf.reduce_all(tf.shape(pixels)[:2] == size)
        pixels = tf.cond(
            same_size,
            lambda: pixels,
            lambda: tf.image.resize(pixels, size, method="bilinear", antialias=True),
        )
        pixels.set_shape([image.height, image.width, channels])
        return pixels, y

    return load


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def load_data(
    spec: DataSpec, data_root: str | os.PathLike[str], loss: str, seed: int = 0
) -> LoadedData:
    """Read and check ``spec``'s training and validation data (paths under ``data_root``)."""
    root = Path(data_root)
    train_raw = _read(spec, root / spec.path, "training")
    val_raw = None
    if spec.validation_path is not None:
        val_raw = _read(spec, root / spec.validation_path, "validation", train_raw.categorical)
        _check_same_input(train_raw, val_raw)
    elif spec.validation_split is not None:
        _split_size(len(train_raw.labels), spec.validation_split)  # fail before label checks

    labels, y_train, y_val = _encode_labels(
        train_raw, val_raw, loss, check_classes=val_raw is not None
    )
    train = train_raw.split(y_train)
    validation = None
    if val_raw is not None:
        assert y_val is not None
        validation = val_raw.split(y_val)
    elif spec.validation_split is not None:
        n = len(train)
        n_val = _split_size(n, spec.validation_split)
        order = np.random.default_rng(seed).permutation(n)
        validation = train.take(np.sort(order[:n_val]))
        train = train.take(np.sort(order[n_val:]))

    data = LoadedData(
        input_kind=train_raw.kind,
        input_shape=train_raw.shape,
        labels=labels,
        train=train,
        validation=validation,
        feature_names=train_raw.feature_names,
        image=train_raw.image,
        notes=train_raw.notes,
        categorical_columns=list(train_raw.categorical),
    )

    if data.input_kind == "tabular":
        _table_statistics(data, spec.normalize)
    if data.input_kind == "text":
        settings = spec.text_or_default()
        assert data.train.text is not None
        data.text_vocabulary = text_vocabulary(data.train.text, settings.max_tokens)
        if settings.sequence_length is None:
            data.sequence_length = fitted_sequence_length(data.train.text)
            data.sequence_length_fitted = True
        else:
            data.sequence_length = settings.sequence_length
        data.text_column = spec.text_column
    return data


# TextVectorization's default standardization: lower case, these characters removed.
_PUNCTUATION = re.compile("[" + re.escape("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'") + "]")


def text_vocabulary(texts: np.ndarray, max_tokens: int) -> list[str]:
    """The ``max_tokens - 2`` most frequent words (two slots: padding and unknown words)."""
    counts: collections.Counter[str] = collections.Counter()
    for text in texts.tolist():
        counts.update(_PUNCTUATION.sub("", text.lower()).split())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[: max_tokens - 2]]


# A fitted sequence length covers this share of the training texts whole, and is at most
# FITTED_SEQUENCE_CAP tokens (texts are cut there; longer documents want an explicit one).
FITTED_SEQUENCE_PERCENTILE = 95
FITTED_SEQUENCE_CAP = 512


def fitted_sequence_length(texts: np.ndarray) -> int:
    """Tokens per text when ``data.text.sequenceLength`` is not set.

    A fixed length far above the texts' own pads most of every sequence: a model that
    does not skip the padding (an unmasked average) then learns mostly from padding.
    Fitting the length to the training split keeps the padding to what the texts need.
    """
    words = [len(_PUNCTUATION.sub("", text.lower()).split()) for text in texts.tolist()]
    length = int(np.ceil(np.percentile(words, FITTED_SEQUENCE_PERCENTILE)))
    return min(max(length, 1), FITTED_SEQUENCE_CAP)


def _table_statistics(data: LoadedData, normalize: bool) -> None:
    """Mean/variance of the numeric columns and the categorical vocabularies (training split)."""
    if data.train.stream is not None:  # streamed: read back a block at a time
        assert data.train.rows is not None
        data.standardize = normalize
        stream = data.train.stream
        data.feature_mean, data.feature_variance = stream.mean_variance(data.train.rows)
        return
    x = data.train.x
    if x is not None and x.shape[1] > 0:
        data.standardize = normalize
        data.feature_mean, data.feature_variance = _mean_variance(x)
    if data.train.cat is not None:
        data.vocabularies = [
            sorted(set(data.train.cat[:, j].tolist())) for j in range(data.train.cat.shape[1])
        ]


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


def _split_size(n: int, fraction: float) -> int:
    n_val = round(n * fraction)
    if n_val < 1 or n - n_val < 1:
        raise TrainerError(
            f"validationSplit {fraction} of {n} rows leaves {n - n_val} training and "
            f"{n_val} validation rows; both need at least one",
            EXIT_BAD_DATA,
        )
    return n_val


# --------------------------------------------------------------------------
# Raw readers: features/paths plus raw labels
# --------------------------------------------------------------------------


@dataclass
class _Raw:
    kind: Literal["tabular", "image", "text"]
    shape: tuple[int, ...]
    labels: np.ndarray  # raw labels: str array, or numeric array
    where: str  # for messages: the file or folder
    x: np.ndarray | None = None
    paths: np.ndarray | None = None
    feature_names: list[str] | None = None
    image: ImageSpec | None = None
    classes: list[str] | None = None  # imageFolder: class folders
    notes: list[str] = field(default_factory=list)
    cat: np.ndarray | None = None  # csv: categorical columns (strings)
    categorical: list[str] = field(default_factory=list)  # their names
    text: np.ndarray | None = None  # text: the texts
    stream: CsvStream | None = None  # csv: the streamed features (x is then None)

    def split(self, y: np.ndarray) -> Split:
        """These examples with their encoded labels ``y``."""
        return Split(
            y=y, x=self.x, paths=self.paths, cat=self.cat, text=self.text, stream=self.stream
        )


def _read(spec: DataSpec, path: Path, role: str, categorical: list[str] | None = None) -> _Raw:
    if spec.format == "csv":
        return _read_csv(spec, path, role, categorical)
    if spec.format == "npz":
        return _read_npz(spec, path, role)
    if spec.format == "text":
        return _read_text_csv(spec, path, role)
    if spec.format == "imageCsv":
        return _read_image_csv(spec, path, role)
    return _read_image_folder(spec, path, role)


def _read_table(path: Path, role: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and each row's line number; checks the file's shape."""
    if not path.exists():
        raise TrainerError(f"{role} data file {path} does not exist", EXIT_BAD_DATA)
    if path.is_dir():
        raise TrainerError(f"{role} data {path} is a folder, expected a CSV file", EXIT_BAD_DATA)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header: list[str] | None = None
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if header is None:
                    header = [c.strip() for c in row]
                    continue
                if len(row) != len(header):
                    raise TrainerError(
                        f"{path}: line {reader.line_num} has {len(row)} fields, "
                        f"the header has {len(header)}",
                        EXIT_BAD_DATA,
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise TrainerError(f"{path} is not a UTF-8 text CSV file ({exc})", EXIT_BAD_DATA) from None
    except csv.Error as exc:
        raise TrainerError(f"{path} is not a readable CSV file: {exc}", EXIT_BAD_DATA) from None
    if header is None:
        raise TrainerError(f"{role} data file {path} is empty", EXIT_BAD_DATA)
    if not rows:
        raise TrainerError(f"{role} data file {path} has a header but no data rows", EXIT_BAD_DATA)
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise TrainerError(f"{path}: duplicate column names: {', '.join(dupes)}", EXIT_BAD_DATA)
    return header, rows, lines


def _column(header: list[str], name: str, path: Path, what: str) -> int:
    try:
        return header.index(name)
    except ValueError:
        shown = ", ".join(header[:10]) + (", ..." if len(header) > 10 else "")
        raise TrainerError(
            f"{path} has no {what} column '{name}' (columns: {shown})", EXIT_BAD_DATA
        ) from None


def _read_csv(spec: DataSpec, path: Path, role: str, categorical: list[str] | None = None) -> _Raw:
    """A table; ``categorical`` (the training file's) fixes the column kinds of validation."""
    if not spec.categorical_columns and not categorical:
        fast = _read_numeric_csv(spec, path)
        if fast is not None:
            return fast
    header, rows, lines = _read_table(path, role)
    label_idx = _column(header, spec.label_column, path, "label")
    if spec.feature_columns is not None:
        if not spec.feature_columns:
            raise TrainerError("data.featureColumns is empty", EXIT_BAD_DATA)
        feature_idx = [_column(header, c, path, "feature") for c in spec.feature_columns]
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
    labels = np.char.strip(table[:, label_idx])
    empty = np.flatnonzero(labels == "")
    if empty.size:
        raise TrainerError(
            f"{path}: empty label in column '{spec.label_column}' at line {lines[empty[0]]}",
            EXIT_BAD_DATA,
        )
    return _Raw(
        kind="tabular",
        shape=(len(numeric),),
        labels=labels,
        where=str(path),
        x=x,
        feature_names=names,
        cat=cat,
        categorical=categorical,
    )


# How _read_numeric_csv reads a CSV as the csv module does: quotes, no comments.
_LOADTXT: dict[str, Any] = {"delimiter": ",", "comments": None, "quotechar": '"'}


def _read_numeric_csv(spec: DataSpec, path: Path) -> _Raw | None:
    """An all-numeric table streamed to float32 block files (:class:`CsvStream`), or None.

    One pass, a block of lines at a time (about ``STREAM_BLOCK_BYTES`` of features):
    NumPy's C reader parses the block, every value is checked, the features go to the
    next block file and the label column stays in memory. Memory is a block or two
    whatever the file's size; the Python reader (:func:`_read_table`) takes ~20x the
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
    return _Raw(
        kind="tabular",
        shape=(len(names),),
        labels=labels,
        where=str(path),
        feature_names=names,
        cat=None,
        categorical=[],
        stream=stream,
    )


def _read_text_csv(spec: DataSpec, path: Path, role: str) -> _Raw:
    header, rows, lines = _read_table(path, role)
    text_idx = _column(header, spec.text_column, path, "text")
    label_idx = _column(header, spec.label_column, path, "label")
    table = np.array(rows, dtype=str)
    labels = np.char.strip(table[:, label_idx])
    empty = np.flatnonzero(labels == "")
    if empty.size:
        raise TrainerError(
            f"{path}: empty label in column '{spec.label_column}' at line {lines[empty[0]]}",
            EXIT_BAD_DATA,
        )
    return _Raw(kind="text", shape=(1,), labels=labels, where=str(path), text=table[:, text_idx])


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


def _read_npz(spec: DataSpec, path: Path, role: str) -> _Raw:
    if not path.is_file():
        raise TrainerError(f"{role} data file {path} does not exist", EXIT_BAD_DATA)
    if path.stat().st_size == 0:
        raise TrainerError(f"{role} data file {path} is empty", EXIT_BAD_DATA)
    if not zipfile.is_zipfile(path):
        raise TrainerError(
            f"{path} is not a readable .npz file (not a zip archive of arrays x and y)",
            EXIT_BAD_DATA,
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise TrainerError(
                    f"{path} lacks array(s) {', '.join(missing)} (has: {', '.join(sorted(keys))})",
                    EXIT_BAD_DATA,
                )
            x = archive["x"]
            y = archive["y"]
    except TrainerError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise TrainerError(
                f"{path}: object (pickled) arrays are not accepted; store numbers or strings",
                EXIT_BAD_DATA,
            ) from None
        raise TrainerError(f"{path} is not a readable .npz file: {exc}", EXIT_BAD_DATA) from None
    except Exception as exc:
        raise TrainerError(f"{path} is not a readable .npz file: {exc}", EXIT_BAD_DATA) from None

    if x.shape[:1] != y.shape[:1] or x.ndim == 0 or y.ndim == 0:
        raise TrainerError(
            f"{path}: x and y must have the same number of rows (x {x.shape}, y {y.shape})",
            EXIT_BAD_DATA,
        )
    if len(x) == 0:
        raise TrainerError(f"{role} data file {path} has no rows", EXIT_BAD_DATA)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TrainerError(f"{path}: x must be numeric, not {x.dtype}", EXIT_BAD_DATA)
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise TrainerError(f"{path}: x has a non-finite value in row {row}", EXIT_BAD_DATA)
    if y.ndim > 2:
        raise TrainerError(f"{path}: y must be 1-D (or 2-D one-hot), not {y.shape}", EXIT_BAD_DATA)
    if y.dtype.kind not in "biufU":
        raise TrainerError(f"{path}: y must hold numbers or strings, not {y.dtype}", EXIT_BAD_DATA)

    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 2:
        return _Raw(kind="tabular", shape=(x.shape[1],), labels=y, where=str(path), x=x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise TrainerError(
            f"{path}: x must be rows x features, or images N x H x W [x 1|3]; got {x.shape}",
            EXIT_BAD_DATA,
        )
    h, w, c = (int(d) for d in x.shape[1:])
    if spec.image is not None and (spec.image.height, spec.image.width, spec.image.channels) != (
        h,
        w,
        c,
    ):
        raise TrainerError(
            f"{path}: images are {h}x{w}x{c} but data.image asks for "
            f"{spec.image.height}x{spec.image.width}x{spec.image.channels}; "
            "npz images are used as stored (remove data.image or resize the arrays)",
            EXIT_BAD_DATA,
        )
    return _Raw(
        kind="image",
        shape=(h, w, c),
        labels=y,
        where=str(path),
        x=x,
        image=ImageSpec(height=h, width=w, channels=c),
    )


def _read_image_csv(spec: DataSpec, path: Path, role: str) -> _Raw:
    header, rows, lines = _read_table(path, role)
    path_idx = _column(header, spec.image_column, path, "image")
    label_idx = _column(header, spec.label_column, path, "label")
    base = path.parent
    files: list[Path] = []
    labels: list[str] = []
    for row, line in zip(rows, lines, strict=True):
        rel = row[path_idx].strip()
        label = row[label_idx].strip()
        if not rel:
            raise TrainerError(f"{path}: empty image path at line {line}", EXIT_BAD_DATA)
        if not label:
            raise TrainerError(f"{path}: empty label at line {line}", EXIT_BAD_DATA)
        files.append(base / rel)
        labels.append(label)
    return _image_files(spec, path, files, labels)


def _read_image_folder(spec: DataSpec, path: Path, role: str) -> _Raw:
    if not path.exists():
        raise TrainerError(f"{role} image folder {path} does not exist", EXIT_BAD_DATA)
    if not path.is_dir():
        raise TrainerError(f"{role} data {path} is not a folder", EXIT_BAD_DATA)
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise TrainerError(
            f"{role} image folder {path} has no class subfolders (expected {path}/<class>/*.png)",
            EXIT_BAD_DATA,
        )
    files: list[Path] = []
    labels: list[str] = []
    for cls in classes:
        found = []
        for dirpath, dirnames, filenames in os.walk(path / cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(Path(dirpath) / name)
        if not found:
            raise TrainerError(
                f"class folder {path / cls} has no images ({', '.join(IMAGE_EXTENSIONS)})",
                EXIT_BAD_DATA,
            )
        files.extend(found)
        labels.extend([cls] * len(found))
    return _image_files(spec, path, files, labels, classes)


def _image_files(
    spec: DataSpec,
    path: Path,
    files: list[Path],
    labels: list[str],
    classes: list[str] | None = None,
) -> _Raw:
    """Image files (checked to decode) and their labels, read at ``data.image``'s size."""
    _check_images(files)
    image = spec.image_or_default()
    return _Raw(
        kind="image",
        shape=(image.height, image.width, image.channels),
        labels=np.array(labels, dtype=str),
        where=str(path),
        paths=np.array([str(f) for f in files], dtype=str),
        image=image,
        classes=classes,
    )


def _check_image(path: Path) -> str | None:
    """None if Pillow can open (and verify) the file as a decodable format, else why not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
    except FileNotFoundError:
        return "file does not exist"
    except IsADirectoryError:
        return "is a folder, not an image"
    except UnidentifiedImageError:
        return "not a readable image (unknown or corrupt format)"
    except Exception as exc:
        return f"corrupt image ({exc})"
    if fmt not in DECODABLE_FORMATS:
        return f"format {fmt} is not supported (use {', '.join(DECODABLE_FORMATS)})"
    return None


def _check_images(files: Sequence[Path]) -> None:
    """Check every image file's header up front; name the first bad file."""
    workers = min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, problem in zip(files, pool.map(_check_image, files), strict=True):
            if problem is not None:
                raise TrainerError(f"image {path}: {problem}", EXIT_BAD_DATA)


def _check_same_input(train: _Raw, val: _Raw) -> None:
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


# --------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------


def _encode_labels(
    train: _Raw, val: _Raw | None, loss: str, check_classes: bool
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

        def enc(i):
            return i.astype(np.float32)[:, None]

    elif loss == "sparse_categorical_crossentropy":
        labels = Labels("multiclass", "sparse", k, names)

        def enc(i):
            return i.astype(np.int32)

    else:  # categorical_crossentropy
        labels = Labels("multiclass", "onehot", k, names)

        def enc(i):
            return np.eye(k, dtype=np.float32)[i]

    return labels, enc(idx_train), (enc(idx_val) if idx_val is not None else None)


def _class_indices(raw: _Raw) -> tuple[list[str], np.ndarray]:
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


def _regression_targets(raw: _Raw) -> np.ndarray:
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
