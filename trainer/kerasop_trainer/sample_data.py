"""Small, deterministic sample data sets (numpy + Pillow only).

Used by the examples, the tests and ``kerasop sample-data``. Every generator takes a
``seed``; the same arguments always write the same bytes.

>>> from kerasop_trainer import sample_data
>>> csv_path = sample_data.write_dense_csv("/tmp/demo/dense.csv")       # 784 features + label
>>> csv_path = sample_data.write_image_csv("/tmp/demo/shapes")          # images/*.png + data.csv
>>> root = sample_data.write_image_folder("/tmp/demo/shapes-folder")    # <class>/*.png
>>> npz = sample_data.write_npz("/tmp/demo/data.npz")                   # arrays x, y
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

import numpy as np

if TYPE_CHECKING:
    import PIL.Image
    import PIL.ImageDraw

# Colours and shapes that make the classes easy to tell apart (index = class index).
_PALETTE = [
    (220, 40, 40),
    (40, 90, 220),
    (30, 170, 60),
    (230, 180, 20),
    (160, 50, 200),
    (20, 190, 190),
    (240, 120, 30),
    (120, 120, 120),
]
_SHAPES = ("circle", "square", "triangle", "cross")


def write_dense_csv(
    path: str | os.PathLike[str], rows: int = 2000, features: int = 784, seed: int = 0
) -> Path:
    """Write a binary-classification CSV: ``f0..f{features-1}`` in [0, 1] and ``label``.

    The label (0/1) shifts the mean of a fixed random quarter of the features up or
    down by 0.15 (2% of labels are flipped), so a ``Dense(10, relu) -> Dense(1,
    sigmoid)`` network reaches >= 0.9 validation accuracy within 5 epochs, as in the
    article this project grew from.
    """
    if rows < 1 or features < 1:
        raise ValueError("rows and features must be >= 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    mask = np.zeros(features)
    mask[rng.choice(features, max(1, features // 4), replace=False)] = 1.0
    x = rng.random((rows, features)) * 0.8 + 0.1 + 0.15 * np.outer(2 * y - 1, mask)
    x = np.clip(x, 0.0, 1.0)
    flip = rng.random(rows) < 0.02
    y = np.where(flip, 1 - y, y)
    header = [f"f{i}" for i in range(features)] + ["label"]
    with _atomic_text(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for row, label in zip(x, y, strict=True):
            writer.writerow([f"{v:.3f}" for v in row] + [int(label)])
    return path


def write_image_csv(
    dir: str | os.PathLike[str],
    per_class: int = 40,
    size: int = 32,
    classes: Sequence[str] = ("circle", "square"),
    seed: int = 0,
    csv_name: str = "data.csv",
) -> Path:
    """Write ``<dir>/images/*.png`` and ``<dir>/data.csv`` (columns ``path,label``).

    Paths in the CSV are relative to the CSV's folder. Returns the CSV's path.
    """
    root = Path(dir)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []
    for name, image in _images(per_class, size, classes, seed):
        rel = f"images/{name}.png"
        image.save(root / rel)
        rows.append((rel, name.rsplit("_", 1)[0]))
    out = root / csv_name
    with _atomic_text(out) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return out


def write_image_folder(
    dir: str | os.PathLike[str],
    per_class: int = 40,
    size: int = 32,
    classes: Sequence[str] = ("circle", "square"),
    seed: int = 0,
) -> Path:
    """Write ``<dir>/<class>/<class>_NNN.png`` (one subfolder per class). Returns ``dir``."""
    root = Path(dir)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    for name, image in _images(per_class, size, classes, seed):
        image.save(root / name.rsplit("_", 1)[0] / f"{name}.png")
    return root


def write_npz(
    path: str | os.PathLike[str],
    rows: int = 400,
    features: int = 20,
    classes: int = 2,
    seed: int = 0,
) -> Path:
    """Write an ``.npz`` with ``x`` (float32, rows x features) and ``y`` (int class index).

    Each class has its own mean vector, so the classes separate easily.
    """
    if classes < 2:
        raise ValueError("classes must be >= 2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, (classes, features))
    y = rng.integers(0, classes, rows)
    x = centers[y] + rng.normal(0.0, 1.0, (rows, features))
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, x=x.astype(np.float32), y=y.astype(np.int64))
    os.replace(tmp, path)
    return path


def write_scaled_csv(
    path: str | os.PathLike[str], rows: int = 569, features: int = 30, seed: int = 0
) -> Path:
    """Write a binary table whose features have very different scales (like tumour measures).

    Column ``m{i}`` is a standard-normal signal times ``10 ** (i % 7 - 3)`` plus an
    offset of ten times that scale, so columns range from thousandths to thousands.
    The label (``benign``/``malignant``) is a noisy linear rule on the unscaled signals:
    a linear model separates it well only after standardizing the features.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    signal = rng.normal(0.0, 1.0, (rows, features))
    weights = rng.normal(0.0, 1.0, features)
    logits = signal @ weights / np.sqrt(features) * 4.0 + rng.normal(0.0, 0.5, rows)
    y = np.where(logits > 0, "malignant", "benign")
    scale = 10.0 ** (np.arange(features) % 7 - 3)
    x = (signal + 10.0) * scale
    header = [f"m{i}" for i in range(features)] + ["label"]
    with _atomic_text(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for row, label in zip(x, y, strict=True):
            writer.writerow([f"{v:.6g}" for v in row] + [label])
    return path


_CITIES = ("berlin", "lisbon", "oslo", "rome", "vienna")
_PLANS = ("basic", "pro", "team")


def write_mixed_csv(path: str | os.PathLike[str], rows: int = 800, seed: int = 0) -> Path:
    """Write a customer table with numeric and categorical columns.

    Columns: ``age`` (18..80), ``monthly_spend`` (5..500), ``city`` and ``plan``
    (strings), ``churn`` (``yes``/``no``, the classification label) and
    ``lifetime_value`` (a number, the regression label). Churn depends on the plan and
    the city as much as on the numbers, so a model that drops the strings is worse.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 81, rows)
    spend = np.round(rng.gamma(2.0, 60.0, rows) + 5.0, 2)
    city = rng.integers(0, len(_CITIES), rows)
    plan = rng.integers(0, len(_PLANS), rows)
    city_effect = np.array([1.2, -0.8, 0.0, 0.9, -1.3])[city]
    plan_effect = np.array([1.5, -0.5, -1.5])[plan]
    logit = city_effect + plan_effect - (age - 45) / 15 + rng.normal(0.0, 0.4, rows)
    churn = np.where(logit > 0, "yes", "no")
    value = np.round(spend * (3.0 + 2.0 * (plan == 2) + (age - 18) / 20.0), 2)
    with _atomic_text(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["age", "monthly_spend", "city", "plan", "churn", "lifetime_value"])
        for i in range(rows):
            writer.writerow(
                [age[i], spend[i], _CITIES[city[i]], _PLANS[plan[i]], churn[i], value[i]]
            )
    return path


OWN_MODEL_CODE = '''"""Model code of the example jobs examples/builder.yaml and examples/model-file.yaml.

Runs only in the trainer pods (model.codePath puts this folder on the Python path).
"""

import keras


@keras.saving.register_keras_serializable(package="my_models")
class Residual(keras.layers.Layer):
    """x + Dense(x): a custom layer, so a saved model needs this module to load."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = keras.layers.Dense(units, activation="relu")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return x + self.dense(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def build(input_shape, num_classes, width=32, blocks=2, dropout=0.1):
    """A functional network: called by the trainer with the data's input shape."""
    inputs = keras.Input(input_shape, name="features")
    x = keras.layers.Dense(width, activation="relu")(inputs)
    for _ in range(blocks):
        x = Residual(width)(x)
        x = keras.layers.Dropout(dropout)(x)
    if num_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid", name="output")(x)
    else:
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="residual_mlp")
'''


def write_own_models(root: str | os.PathLike[str], features: int = 784) -> Path:
    """Write the own-model examples' files under ``root``; returns ``root``.

    ``code/my_models.py`` (a builder function and a registered custom layer) and
    ``net.keras``: a compiled functional model built by that code for the dense table
    (``features`` inputs, binary output), saved untrained. Imports Keras.
    """
    import importlib.util

    root = Path(root)
    (root / "code").mkdir(parents=True, exist_ok=True)
    code_file = root / "code" / "my_models.py"
    with _atomic_text(code_file) as fh:
        fh.write(OWN_MODEL_CODE)
    spec = importlib.util.spec_from_file_location("my_models", code_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import keras

    keras.utils.set_random_seed(0)
    model = module.build((features,), 2, width=16, blocks=1)
    model.compile(
        optimizer=keras.optimizers.Adam(0.003), loss="binary_crossentropy", metrics=["accuracy"]
    )
    tmp = root / ".net.tmp.keras"
    model.save(tmp)
    os.replace(tmp, root / "net.keras")
    return root


_GOOD = ("great", "lovely", "excellent", "friendly", "fast", "delicious", "clean", "perfect")
_BAD = ("awful", "rude", "slow", "cold", "dirty", "broken", "terrible", "noisy")
_NEUTRAL = (
    "the",
    "food",
    "room",
    "staff",
    "service",
    "was",
    "and",
    "very",
    "our",
    "view",
    "night",
    "table",
    "we",
    "it",
    "a",
    "at",
    "hotel",
    "dinner",
)


def write_text_csv(path: str | os.PathLike[str], rows: int = 800, seed: int = 0) -> Path:
    """Write review texts with a ``text`` and a ``label`` (``positive``/``negative``) column.

    Each review mixes neutral words with two or three words of its sentiment and, one
    time in five, one word of the other (so single words do not decide it alone).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with _atomic_text(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["text", "label"])
        for _ in range(rows):
            positive = bool(rng.integers(0, 2))
            own, other = (_GOOD, _BAD) if positive else (_BAD, _GOOD)
            words = list(rng.choice(_NEUTRAL, int(rng.integers(5, 12))))
            words += list(rng.choice(own, int(rng.integers(2, 4))))
            if rng.random() < 0.2:
                words.append(str(rng.choice(other)))
            rng.shuffle(words)
            text = " ".join(words).capitalize() + rng.choice([".", "!", "..."])
            writer.writerow([text, "positive" if positive else "negative"])
    return path


# --------------------------------------------------------------------------


def _images(
    per_class: int, size: int, classes: Sequence[str], seed: int
) -> Iterator[tuple[str, PIL.Image.Image]]:
    """Yield ``(f"{class}_{i:03d}", PIL.Image)`` for every class and index."""
    from PIL import Image, ImageDraw

    if per_class < 1:
        raise ValueError("per_class must be >= 1")
    if size < 8:
        raise ValueError("size must be >= 8")
    if len(set(classes)) != len(classes) or len(classes) < 1:
        raise ValueError("classes must be distinct and non-empty")
    rng = np.random.default_rng(seed)
    for index, cls in enumerate(classes):
        shape = cls if cls in _SHAPES else _SHAPES[index % len(_SHAPES)]
        color = np.array(_PALETTE[index % len(_PALETTE)])
        for i in range(per_class):
            background = rng.integers(200, 256, (size, size, 3), dtype=np.uint8)
            image = Image.fromarray(background, "RGB")
            draw = ImageDraw.Draw(image)
            extent = int(rng.integers(size * 4 // 10, size * 7 // 10 + 1))
            x0 = int(rng.integers(0, size - extent + 1))
            y0 = int(rng.integers(0, size - extent + 1))
            box = (x0, y0, x0 + extent - 1, y0 + extent - 1)
            fill = tuple(int(c) for c in np.clip(color + rng.integers(-25, 26, 3), 0, 255))
            _draw(draw, shape, box, fill)
            yield f"{cls}_{i:03d}", image


def _draw(
    draw: PIL.ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple[int, ...]
) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # cross
        w = max(1, (x1 - x0) // 4)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((cx - w, y0, cx + w, y1), fill=fill)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=fill)


class _atomic_text:
    """Write a text file under a temporary name, rename it into place on success."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")

    def __enter__(self) -> TextIO:
        self.fh = open(self.tmp, "w", newline="", encoding="utf-8")
        return self.fh

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.fh.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
