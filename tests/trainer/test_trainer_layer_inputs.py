"""Input-side layer types of ``model.layers`` (``Input``, ``StringLookup``,
``CategoryEncoding``) and the table standardization in front of builder and model-file
models. Real Keras training on generated tables and texts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from trainerkit import Events, make_job

from kerasop.events import EXIT_BAD_SPEC, EXIT_MODEL_MISMATCH
from kerasop_trainer import sample_data
from kerasop_trainer.errors import TrainerError
from kerasop_trainer.train import run

MIXED = {
    "format": "csv",
    "path": "mixed.csv",
    "labelColumn": "churn",
    "featureColumns": ["age", "monthly_spend", "city", "plan"],
    "validationSplit": 0.2,
}
SCALED = {"format": "csv", "path": "scaled.csv", "validationSplit": 0.2}
OUTPUT = [
    {"type": "Dense", "units": 16, "activation": "relu"},
    {"type": "Dense", "units": 1, "activation": "sigmoid"},
]

BUILDER = '''
import keras


def build(input_shape, num_classes):
    """A plain network: it trusts its input to be standardized."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x), name="plain")
'''


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layer-inputs")
    sample_data.write_mixed_csv(root / "mixed.csv")
    sample_data.write_scaled_csv(root / "scaled.csv")
    sample_data.write_text_csv(root / "reviews.csv", rows=600)
    (root / "code").mkdir()
    (root / "code" / "plainnet.py").write_text(BUILDER)
    yield root
    sys.modules.pop("plainnet", None)
    sys.path[:] = [p for p in sys.path if p != str((root / "code").absolute())]


def test_input_and_string_lookup_start_a_mixed_table_model(tables, tmp_path):
    import keras
    import tensorflow as tf

    layers = [{"type": "Input", "shape": [2]}, {"type": "StringLookup", "numOovIndices": 3}]
    job = make_job("churn", MIXED, {"layers": layers + OUTPUT}, {"epochs": 20, "batchSize": 32})
    done = run(job, tables, tmp_path / "store", "c1", emit=Events())
    assert done["metrics"]["accuracy"] >= 0.85, done

    model = keras.saving.load_model(Path(done["modelPath"]) / "model.keras")
    # 5 cities + 3 slots for unseen ones
    assert model.get_layer("city_lookup").vocabulary_size() == 5 + 3
    rows = {
        "features": np.array([[25, 40.0], [70, 40.0]], dtype="float32"),
        "city": tf.constant([["berlin"], ["atlantis"]]),
        "plan": tf.constant([["basic"], ["team"]]),
    }
    p = model.predict(rows, verbose=0)
    assert p[0, 0] > 0.5 > p[1, 0], p


def test_category_encoding_makes_a_bag_of_words_text_model(tables, tmp_path):
    import keras
    import tensorflow as tf

    layers = [{"type": "Input"}, {"type": "CategoryEncoding", "outputMode": "multi_hot"}]
    job = make_job(
        "reviews",
        {
            "format": "text",
            "path": "reviews.csv",
            "validationSplit": 0.2,
            "text": {"maxTokens": 100, "sequenceLength": 20},
        },
        {"layers": layers + OUTPUT},
        {"epochs": 8, "batchSize": 32, "learningRate": 0.01},
    )
    done = run(job, tables, tmp_path / "store", "t1", emit=Events())
    assert done["metrics"]["accuracy"] >= 0.85, done

    vdir = Path(done["modelPath"])
    model = keras.saving.load_model(vdir / "model.keras")
    encoding = next(la for la in model.layers if isinstance(la, keras.layers.CategoryEncoding))
    words = json.loads((vdir / "metadata.json").read_text())["input"]["text"]["vocabularySize"]
    assert encoding.num_tokens == words + 2  # the vocabulary, padding and unknown words
    p = model.predict(
        tf.constant([["What a lovely, friendly and clean hotel!"], ["Rude staff, dirty room."]]),
        verbose=0,
    )
    assert p[0, 0] > 0.5 > p[1, 0], p


LAST = OUTPUT[-1]


@pytest.mark.parametrize(
    ("data", "layers", "code", "text"),
    [
        (SCALED, [{"type": "Input", "shape": [4]}, LAST], EXIT_MODEL_MISMATCH, "gives (batch, 30)"),
        (SCALED, [{"type": "StringLookup"}, LAST], EXIT_MODEL_MISMATCH, "categorical (string)"),
        (SCALED, [{"type": "CategoryEncoding"}, LAST], EXIT_BAD_SPEC, "needs numTokens"),
    ],
)
def test_input_layers_in_the_wrong_place_fail_clearly(tables, tmp_path, data, layers, code, text):
    job = make_job("bad", data, {"layers": layers}, {"epochs": 1})
    with pytest.raises(TrainerError) as err:
        run(job, tables, tmp_path / "store", "b1", emit=Events())
    assert err.value.exit_code == code and text in str(err.value), err.value


def test_builder_model_gets_standardized_rows_and_serves_raw_ones(tables, tmp_path):
    """The scaled table (features from thousandths to thousands): a builder network
    behind the standardization front learns it, without it (normalize: false) it stays
    near chance; the published model.keras and model.onnx take the raw rows."""
    import keras
    import onnxruntime as ort

    builder = {"builder": {"module": "plainnet"}, "codePath": "code"}
    accuracy = {}
    for normalize in (True, False):
        job = make_job(
            "scaled",
            {**SCALED, "normalize": normalize},
            builder,
            {"epochs": 20, "batchSize": 16},
        )
        done = run(job, tables, tmp_path / "store", f"s-{normalize}", emit=Events())
        accuracy[normalize] = done["metrics"]["accuracy"]
    print(
        f"scaled table, builder model: standardized {accuracy[True]:.3f}, raw {accuracy[False]:.3f}"
    )
    assert accuracy[True] >= 0.88 and accuracy[True] - accuracy[False] >= 0.2, accuracy

    version = tmp_path / "store" / "scaled" / "1"  # the normalize: true run
    model = keras.saving.load_model(version / "model.keras")
    assert model.get_layer("standardize") is not None and model.get_layer("plain") is not None
    meta = json.loads((version / "metadata.json").read_text())
    rows = np.loadtxt(tables / "scaled.csv", delimiter=",", skiprows=1, usecols=range(30))
    rows = rows.astype("float32")
    names = np.loadtxt(tables / "scaled.csv", delimiter=",", skiprows=1, usecols=30, dtype=str)
    labels = names == meta["output"]["classNames"][1]
    predicted = model.predict(rows, verbose=0)[:, 0]
    assert np.mean((predicted > 0.5) == labels) >= 0.88  # raw rows in, right answers out

    session = ort.InferenceSession(str(version / "model.onnx"))
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: rows[:8]})
    np.testing.assert_allclose(onnx_out[:, 0], predicted[:8], atol=1e-5)

    assert meta["input"]["standardized"] is True
    raw_meta = json.loads((tmp_path / "store" / "scaled" / "2" / "metadata.json").read_text())
    assert raw_meta["input"]["standardized"] is False


def test_model_file_keeps_its_compile_settings_behind_the_front(tables, tmp_path):
    """A compiled model file on a numeric table: standardized in front, its own loss
    and optimizer kept; fine-tuning the published version does not standardize twice."""
    import keras

    inputs = keras.Input((30,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    net = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    net.compile(
        optimizer=keras.optimizers.RMSprop(0.005), loss="binary_crossentropy", metrics=["accuracy"]
    )
    net.save(tables / "net.keras")

    job = make_job(
        "filed", SCALED, {"file": {"path": "net.keras"}}, {"epochs": 20, "batchSize": 16}
    )
    done = run(job, tables, tmp_path / "store", "f1", emit=Events())
    assert done["metrics"]["accuracy"] >= 0.88, done
    published = Path(done["modelPath"]) / "model.keras"
    model = keras.saving.load_model(published)
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert model.get_layer("standardize") is not None

    (tables / "published.keras").write_bytes(published.read_bytes())
    again = make_job("filed", SCALED, {"file": {"path": "published.keras"}}, {"epochs": 2})
    done = run(again, tables, tmp_path / "store", "f2", emit=Events())
    tuned = keras.saving.load_model(Path(done["modelPath"]) / "model.keras")
    assert [la.name for la in tuned.layers].count("standardize") == 1
    assert done["metrics"]["accuracy"] >= 0.88, done
