"""Text defaults on texts much shorter than the old fixed 128 tokens (issue 24, item 1).

Padded to 128 tokens without a mask, an 8-word text's pooled average is mostly padding and
the model barely learns; the padding mask and a sequence length fitted to the training
split each fix that, and both are the defaults on the text format.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from trainerkit import Events, make_job

from kerasop.spec import DataSpec
from kerasop_trainer.data import load_data
from kerasop_trainer.data.readers.text import FITTED_SEQUENCE_CAP
from kerasop_trainer.train import run

GOOD = ("great", "lovely", "excellent", "friendly", "clean", "perfect")
BAD = ("awful", "rude", "dirty", "broken", "terrible", "noisy")
NEUTRAL = (
    "the", "room", "was", "and", "staff", "hotel", "breakfast", "view", "very", "our",
    "stay", "at", "with", "a", "bed", "location", "it", "quite",
)  # fmt: skip

POOLED = [
    {"type": "Embedding", "outputDim": 16},
    {"type": "GlobalAveragePooling1D"},
    {"type": "Dense", "units": 1, "activation": "sigmoid"},
]


def write_short_reviews(path: Path, rows: int = 1200, seed: int = 0) -> Path:
    """About 8 words a text (6 neutral, 1 or 2 of the label's sentiment): the words decide."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["text", "label"])
        for _ in range(rows):
            positive = bool(rng.integers(0, 2))
            words = list(rng.choice(NEUTRAL, int(rng.integers(5, 8))))
            words += list(rng.choice(GOOD if positive else BAD, int(rng.integers(1, 3))))
            rng.shuffle(words)
            writer.writerow([" ".join(words), "positive" if positive else "negative"])
    return path


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("short-text")
    write_short_reviews(root / "reviews.csv")
    return root


def text_job(name: str, text: dict | None, layers: list[dict], **output):
    data = {"format": "text", "path": "reviews.csv", "validationSplit": 0.2}
    if text is not None:
        data["text"] = text
    return make_job(name, data, {"layers": layers}, {"epochs": 6, "batchSize": 32}, **output)


def val_accuracies(events: Events) -> list[float]:
    """Validation accuracy after each epoch: the old defaults flip between chance and 1.0
    from epoch to epoch, so the last epoch alone can look good by luck."""
    return [e["metrics"]["val_accuracy"] for e in events.of("epoch")]


def test_fitted_sequence_length_follows_the_training_split(reviews):
    data = load_data(
        DataSpec.model_validate({"format": "text", "path": "reviews.csv", "validationSplit": 0.2}),
        reviews,
        "binary_crossentropy",
    )
    assert data.text.sequence_length_fitted
    assert 7 <= data.text.sequence_length <= 9  # 6 to 9 words a text, the 95th percentile
    assert (
        data.input_metadata().to_json_dict()["text"]["sequenceLength"] == data.text.sequence_length
    )
    assert data.input_metadata().to_json_dict()["text"]["sequenceLengthFitted"] is True

    explicit = DataSpec.model_validate(
        {"format": "text", "path": "reviews.csv", "text": {"sequenceLength": 128}}
    )
    data = load_data(explicit, reviews, "binary_crossentropy")
    assert (data.text.sequence_length, data.text.sequence_length_fitted) == (128, False)


def test_fitted_sequence_length_is_capped(tmp_path):
    with open(tmp_path / "long.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(20):
            writer.writerow([" ".join(["word"] * 2000), i % 2])
    spec = DataSpec.model_validate({"format": "text", "path": "long.csv"})
    data = load_data(spec, tmp_path, "binary_crossentropy")
    assert data.text.sequence_length == FITTED_SEQUENCE_CAP


def test_text_defaults_learn_short_texts_and_serve(reviews, tmp_path):
    """The defaults (mask, fitted length) learn; the served and exported model keep the length."""
    import keras
    import tensorflow as tf

    job = text_job("short", None, POOLED, output={"formats": ["savedmodel"]})
    events = Events()
    done = run(job, reviews, tmp_path / "store", "d1", emit=events)
    assert min(val_accuracies(events)[1:]) >= 0.95, val_accuracies(events)

    vdir = Path(done["modelPath"])
    meta = json.loads((vdir / "metadata.json").read_text())
    length = meta["input"]["text"]["sequenceLength"]
    assert 7 <= length <= 9 and meta["input"]["text"]["sequenceLengthFitted"] is True

    model = keras.saving.load_model(vdir / "model.keras")
    assert model.get_layer("vectorize").get_config()["output_sequence_length"] == length
    embedding = next(la for la in model.layers if isinstance(la, keras.layers.Embedding))
    assert embedding.mask_zero
    texts = [["the staff was lovely and the room clean"], ["rude staff and a dirty room"]]
    expected = model.predict(tf.constant(texts), verbose=0)
    assert expected[0, 0] > 0.5 > expected[1, 0], expected
    # A text longer than the fitted length is cut, not rejected.
    model.predict(tf.constant([[" ".join(["great"] * 40)]]), verbose=0)

    exported = tf.saved_model.load(str(vdir))
    serve = exported.signatures["serving_default"]
    (got,) = serve(tf.constant(texts)).values()
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("text", "mask"),
    [
        pytest.param({"sequenceLength": 128}, None, id="mask-only"),
        pytest.param(None, False, id="fitted-length-only"),
    ],
)
def test_either_default_alone_fixes_short_texts(text, mask, reviews, tmp_path):
    layers = [dict(POOLED[0], **({} if mask is None else {"maskZero": mask})), *POOLED[1:]]
    events = Events()
    run(text_job("short", text, layers), reviews, tmp_path / "store", "a1", emit=events)
    assert min(val_accuracies(events)[1:]) >= 0.95, val_accuracies(events)


def test_the_old_defaults_learn_short_texts_badly(reviews, tmp_path):
    """128 tokens and no mask (the old defaults, now explicit): the average is mostly padding."""
    layers = [dict(POOLED[0], maskZero=False), *POOLED[1:]]
    job = text_job("short", {"sequenceLength": 128}, layers)
    events = Events()
    run(job, reviews, tmp_path / "store", "o1", emit=events)
    assert np.mean(val_accuracies(events)) < 0.8, val_accuracies(events)


def test_a_default_mask_does_not_break_conv1d(reviews, tmp_path):
    """Conv1D takes no mask: Keras drops it with a warning and the stack trains as before."""
    layers = [
        {"type": "Embedding", "outputDim": 16},
        {"type": "Conv1D", "filters": 16, "kernelSize": 3, "activation": "relu", "padding": "same"},
        {"type": "GlobalMaxPooling1D"},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
    ]
    events = Events()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(text_job("conv", None, layers), reviews, tmp_path / "store", "c1", emit=events)
    assert min(val_accuracies(events)[1:]) >= 0.95, val_accuracies(events)
    dropped = [str(w.message) for w in caught if "does not support masking" in str(w.message)]
    assert dropped and "conv1d" in dropped[0].lower(), [str(w.message) for w in caught]
