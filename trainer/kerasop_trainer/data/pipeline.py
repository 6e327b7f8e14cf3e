"""``tf.data`` pipelines over a split, and sharding the training split over workers.

TensorFlow is imported only when a pipeline is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from kerasop.events import EXIT_BAD_DATA
from kerasop.spec import ImageSpec
from kerasop_trainer.data.splits import ImageFileSplit, Split, StreamedSplit
from kerasop_trainer.errors import TrainerError

if TYPE_CHECKING:
    from kerasop_trainer.data.loaded import LoadedData


def shard(data: LoadedData, index: int, count: int, seed: int) -> LoadedData:
    """This worker's share of the training rows (validation stays whole).

    Every shard has the same number of rows (``len(train) // count``), so all
    workers run the same number of steps; the few left-over rows are dropped.
    """
    if count <= 1:
        return data
    order = np.random.default_rng(seed).permutation(len(data.train))
    per = len(data.train) // count
    if per == 0:
        raise TrainerError(
            f"{len(data.train)} training rows cannot be split over {count} workers",
            EXIT_BAD_DATA,
        )
    mine = np.sort(order[index * per : (index + 1) * per])
    return replace(data, train=data.train.take(mine))


def dataset(
    data: LoadedData,
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
    ``SHUFFLE_WINDOW_ROWS`` (4,096) rows (:meth:`.CsvStream.dataset`).
    """
    import tensorflow as tf

    n = len(split)
    if isinstance(split, StreamedSplit):
        ds = split.stream.dataset(
            split.rows,
            split.y,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_remainder=drop_remainder,
        )
    elif isinstance(split, ImageFileSplit):
        assert data.image is not None
        ds = tf.data.Dataset.from_tensor_slices((split.paths, split.y))
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(
            image_decoder(data.image), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        # In memory: shuffle row numbers and gather a whole batch at once, as Keras
        # does for arrays (slicing row by row costs more than a small model's step).
        tensors = tf.nest.map_structure(tf.convert_to_tensor, (data.features(split), split.y))
        ds = tf.data.Dataset.range(n)
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(
            lambda rows: tf.nest.map_structure(lambda t: tf.gather(t, rows), tensors),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def image_decoder(image: ImageSpec) -> Callable[[Any, Any], tuple[Any, Any]]:
    """``(path, y) -> (float32 HxWxC pixels 0..255, y)``: read, decode, resize (bilinear)."""
    import tensorflow as tf

    size = [image.height, image.width]
    channels = image.channels

    def load(path: Any, y: Any) -> tuple[Any, Any]:
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
