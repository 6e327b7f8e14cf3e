"""Tables the way real data comes: features of very different scales, string columns,
numeric labels. The preprocessing is inside the model, so the served model takes raw rows.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from trainerkit import DENSE_MODEL, Events, decoded, make_job

from kerasop.spec import DataSpec
from kerasop.store import ModelStore
from kerasop_trainer import sample_data
from kerasop_trainer.data import load_data
from kerasop_trainer.errors import TrainerError
from kerasop_trainer.train import run

DENSE_16 = {
    "layers": [
        {"type": "Dense", "units": 16, "activation": "relu"},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
    ]
}
MIXED_FEATURES = ["age", "monthly_spend", "city", "plan"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tables")
    sample_data.write_scaled_csv(root / "scaled.csv")
    sample_data.write_mixed_csv(root / "mixed.csv")
    _write_breast_cancer(root)
    return root


def _write_breast_cancer(root: Path) -> None:
    """scikit-learn's breast cancer table (569 rows, 30 features) as train/validation CSVs."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    order = np.random.default_rng(0).permutation(len(bunch.target))
    cut = int(len(order) * 0.8)
    names = [n.replace(" ", "_") for n in bunch.feature_names]
    for file, index in (("bc-train.csv", order[:cut]), ("bc-val.csv", order[cut:])):
        with open(root / file, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([*names, "label"])
            for i in index:
                writer.writerow([*bunch.data[i].tolist(), int(bunch.target[i])])


@contextlib.contextmanager
def running_server(store_root: Path, model: str) -> Iterator[Any]:
    """The real model server on 127.0.0.1 (free port), model loaded."""
    from kerasop_server.config import ServerConfig
    from kerasop_server.runner import BackgroundServer

    server = BackgroundServer(
        ServerConfig(store_root=store_root, model=model, host="127.0.0.1", port=0)
    )
    server.start(timeout=120)
    try:
        yield server
    finally:
        server.stop()


def _read_xy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    return table[:, :-1], table[:, -1]


def test_default_standardization_matches_a_logistic_regression_baseline(tables, tmp_path):
    """Breast cancer data: the documented Dense(10) -> Dense(1) network with the defaults
    against scikit-learn (StandardScaler + LogisticRegression) on the same split; without
    standardization the same network is clearly worse."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = _read_xy(tables / "bc-train.csv")
    x_val, y_val = _read_xy(tables / "bc-val.csv")
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    baseline_accuracy = baseline.fit(x_train, y_train).score(x_val, y_val)

    accuracy = {}
    for normalize in (True, False):
        job = make_job(
            "bc",
            {
                "format": "csv",
                "path": "bc-train.csv",
                "validationPath": "bc-val.csv",
                "normalize": normalize,
            },
            DENSE_MODEL,
            {"epochs": 30, "batchSize": 32},
        )
        done = run(job, tables, tmp_path / "store", f"bc-{normalize}", emit=Events())
        accuracy[normalize] = done["metrics"]["accuracy"]
    print(
        f"breast cancer validation accuracy: sklearn {baseline_accuracy:.3f}, "
        f"kerasop default {accuracy[True]:.3f}, normalize=false {accuracy[False]:.3f}"
    )
    assert baseline_accuracy >= 0.95
    assert accuracy[True] >= baseline_accuracy - 0.03, (accuracy, baseline_accuracy)
    assert accuracy[True] - accuracy[False] >= 0.05, accuracy

    meta = ModelStore(tmp_path / "store").metadata("bc", 1).to_json_dict()
    assert meta["input"]["standardized"] is True and meta["input"]["shape"] == [30]


def test_scaled_table_needs_standardization(tables, tmp_path):
    accuracy = {}
    for normalize in (True, False):
        job = make_job(
            "scaled",
            {"format": "csv", "path": "scaled.csv", "validationSplit": 0.2, "normalize": normalize},
            DENSE_16,
            {"epochs": 20, "batchSize": 16},
        )
        accuracy[normalize] = run(job, tables, tmp_path / "s", f"s-{normalize}", emit=Events())[
            "metrics"
        ]["accuracy"]
    assert accuracy[True] >= 0.88 and accuracy[True] - accuracy[False] >= 0.2, accuracy

    import keras

    version = tmp_path / "s" / "scaled" / "1"
    model = keras.saving.load_model(version / "model.keras")
    norm = model.get_layer("standardize")
    x = np.loadtxt(tables / "scaled.csv", delimiter=",", skiprows=1, usecols=range(30))
    # statistics of the training split only (80% of the rows), close to the whole file's
    mean = -np.asarray(norm.offset) / np.asarray(norm.scale)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=0.05)

    # the standardized model runs on ONNX Runtime (the server's engine) from its one input
    import onnxruntime as ort

    session = ort.InferenceSession(str(version / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == [model.inputs[0].name]
    rows = x[:4].astype("float32")
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: rows})
    np.testing.assert_allclose(onnx_out, model.predict(rows, verbose=0), atol=1e-5)


def test_column_kinds_follow_the_stated_rule(tables, tmp_path):
    data = load_data(
        DataSpec(
            format="csv", path="mixed.csv", labelColumn="churn", featureColumns=MIXED_FEATURES
        ),
        tables,
        "binary_crossentropy",
    )
    assert data.categorical_columns == ["city", "plan"]
    assert data.input_shape == (2,) and data.table.feature_names == MIXED_FEATURES
    assert data.table.vocabularies == [
        ["berlin", "lisbon", "oslo", "rome", "vienna"],
        ["basic", "pro", "team"],
    ]
    assert data.input_metadata().to_json_dict()["categorical"][0] == {
        "column": "city",
        "input": "city",
        "values": 5,
    }

    # declared: a numeric-looking column becomes categorical
    data = load_data(
        DataSpec(
            format="csv",
            path="mixed.csv",
            labelColumn="churn",
            featureColumns=MIXED_FEATURES,
            categoricalColumns=["age"],
        ),
        tables,
        "binary_crossentropy",
    )
    assert data.categorical_columns == ["age", "city", "plan"] and data.input_shape == (1,)

    # mostly numbers and one stray word: an error, not a category
    (tmp_path / "typo.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,n/a,0\n")
    with pytest.raises(TrainerError) as err:
        load_data(DataSpec(format="csv", path="typo.csv"), tmp_path, "binary_crossentropy")
    assert "column 'b' is not numeric" in str(err.value)
    assert "categoricalColumns" in str(err.value)

    with pytest.raises(TrainerError, match="categoricalColumns nope"):
        load_data(
            DataSpec(format="csv", path="typo.csv", categoricalColumns=["nope"]),
            tmp_path,
            "binary_crossentropy",
        )


def test_mixed_table_trains_and_takes_raw_strings(tables, tmp_path):
    import keras
    import tensorflow as tf

    job = make_job(
        "churn",
        {
            "format": "csv",
            "path": "mixed.csv",
            "labelColumn": "churn",
            "featureColumns": MIXED_FEATURES,
            "validationSplit": 0.2,
        },
        DENSE_16,
        {"epochs": 20, "batchSize": 32},
    )
    done = run(job, tables, tmp_path / "store", "churn-1", emit=Events())
    assert done["metrics"]["accuracy"] >= 0.85, done

    # the same network on the numbers alone misses what city and plan say
    numeric_only = make_job(
        "churn-numbers",
        {
            "format": "csv",
            "path": "mixed.csv",
            "labelColumn": "churn",
            "featureColumns": ["age", "monthly_spend"],
            "validationSplit": 0.2,
        },
        DENSE_16,
        {"epochs": 20, "batchSize": 32},
    )
    numbers = run(numeric_only, tables, tmp_path / "store", "churn-2", emit=Events())
    assert done["metrics"]["accuracy"] - numbers["metrics"]["accuracy"] >= 0.1, (done, numbers)

    vdir = tmp_path / "store" / "churn" / "1"
    meta = json.loads((vdir / "metadata.json").read_text())
    assert meta["input"]["featureNames"] == ["age", "monthly_spend"]
    assert [c["column"] for c in meta["input"]["categorical"]] == ["city", "plan"]
    assert meta["output"]["classNames"] == ["no", "yes"]
    assert not (vdir / "model.onnx").exists()  # string inputs: the Keras engine serves it
    # what the operator reads to pick the image: the runtime one here, the slim one there
    assert done["modelFormats"] == ["keras"]
    assert numbers["modelFormats"] == ["keras", "onnx"]

    model = keras.saving.load_model(vdir / "model.keras")
    rows = {
        "features": np.array([[25, 40.0], [70, 40.0]], dtype="float32"),
        "city": tf.constant([["berlin"], ["atlantis"]]),  # unseen value: the extra slot
        "plan": tf.constant([["basic"], ["team"]]),
    }
    p = model.predict(rows, verbose=0)
    assert p.shape == (2, 1) and np.all((p >= 0) & (p <= 1))
    assert p[0, 0] > 0.5 > p[1, 0]  # young on basic in berlin churns; old on team stays


def test_regression_is_served_with_raw_numbers(tables, tmp_path):
    """A numeric label with mse: trained, standardized inside, served over both protocols."""
    import keras

    job = make_job(
        "value",
        {
            "format": "csv",
            "path": "mixed.csv",
            "labelColumn": "lifetime_value",
            "featureColumns": ["age", "monthly_spend"],
            "validationSplit": 0.2,
        },
        {
            "layers": [
                {"type": "Dense", "units": 32, "activation": "relu"},
                {"type": "Dense", "units": 1},
            ]
        },
        {"epochs": 40, "batchSize": 32, "loss": "mean_squared_error", "learningRate": 0.02},
    )
    store = tmp_path / "store"
    done = run(job, tables, store, "value-1", emit=Events())
    values = np.loadtxt(tables / "mixed.csv", delimiter=",", skiprows=1, usecols=5)
    # far better than always predicting the mean
    assert done["metrics"]["mae"] < 0.5 * np.abs(values - values.mean()).mean(), done
    vdir = store / "value" / "1"
    assert (vdir / "model.onnx").exists()
    meta = json.loads((vdir / "metadata.json").read_text())
    assert meta["output"] == {"kind": "regression", "shape": [1]}

    x = np.array([[30, 120.0], [60, 300.0], [45, 10.0]], dtype="float32")
    expected = keras.saving.load_model(vdir / "model.keras").predict(x, verbose=0)
    with running_server(store, "value") as server:
        r = httpx.post(f"{server.url}/v1/models/value:predict", json={"instances": x.tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["predictions"]), expected, rtol=1e-4)
        body = {
            "inputs": [{"name": "input", "shape": [3, 2], "datatype": "FP32", "data": x.tolist()}]
        }
        r = httpx.post(f"{server.url}/v2/models/value/infer", json=body)
        assert r.status_code == 200, r.text
        got = np.array(r.json()["outputs"][0]["data"]).reshape(3, 1)
        np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert expected[1, 0] > expected[0, 0] > expected[2, 0]  # value grows with spend


TEXT_MODELS = {
    "embedding-pooling": [
        {"type": "Embedding", "outputDim": 16},
        {"type": "GlobalAveragePooling1D"},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
    ],
    "conv1d": [
        {"type": "Embedding", "outputDim": 16},
        {"type": "Conv1D", "filters": 8, "kernelSize": 3, "activation": "relu"},
        {"type": "MaxPooling1D", "poolSize": 2},
        {"type": "GlobalMaxPooling1D"},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
    ],
    "bidirectional-lstm": [
        {"type": "Embedding", "outputDim": 8, "maskZero": True},
        {"type": "Bidirectional", "cell": "LSTM", "units": 8},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
    ],
    "gru": [
        {"type": "Embedding", "outputDim": 8},
        {"type": "GRU", "units": 8, "returnSequences": True},
        {"type": "GlobalAveragePooling1D"},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
    ],
}


@pytest.mark.parametrize("layers", TEXT_MODELS.values(), ids=TEXT_MODELS.keys())
def test_text_classifier_takes_raw_strings(layers, tmp_path):
    import keras
    import tensorflow as tf

    sample_data.write_text_csv(tmp_path / "reviews.csv", rows=600)
    job = make_job(
        "reviews",
        {
            "format": "text",
            "path": "reviews.csv",
            "validationSplit": 0.2,
            "text": {"maxTokens": 100, "sequenceLength": 20},
        },
        {"layers": layers},
        {"epochs": 8, "batchSize": 32, "learningRate": 0.01},
    )
    done = run(job, tmp_path, tmp_path / "store", "t1", emit=Events())
    assert done["metrics"]["accuracy"] >= 0.85, done
    vdir = Path(done["modelPath"])
    meta = json.loads((vdir / "metadata.json").read_text())
    assert meta["input"]["kind"] == "text" and meta["input"]["dtype"] == "string"
    assert meta["input"]["text"]["sequenceLength"] == 20
    assert meta["output"]["classNames"] == ["negative", "positive"]

    model = keras.saving.load_model(vdir / "model.keras")
    p = model.predict(
        tf.constant(
            [["What a lovely, friendly and clean hotel!"], ["Rude staff, cold dirty room."]]
        ),
        verbose=0,
    )
    assert p[0, 0] > 0.5 > p[1, 0], p


class Interrupted(BaseException):
    """Stands for a killed trainer: raised from the progress output after an epoch."""


class StopAfterEpoch(Events):
    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def __call__(self, line: str) -> None:
        super().__call__(line)
        event = decoded(line)
        if event and event["kerasop"] == "epoch" and event["epoch"] >= self.epoch:
            raise Interrupted()


@pytest.mark.parametrize("kind", ["mixed-table", "text"])
def test_preprocessing_models_resume_from_their_checkpoint(kind, tables, tmp_path):
    """The lookup and vectorization layers survive the checkpoint: a rerun continues."""
    if kind == "text":
        sample_data.write_text_csv(tmp_path / "reviews.csv", rows=300)
        root = tmp_path
        data = {
            "format": "text",
            "path": "reviews.csv",
            "validationSplit": 0.2,
            "text": {"maxTokens": 60, "sequenceLength": 16},
        }
        layers = TEXT_MODELS["embedding-pooling"]
    else:
        root = tables
        data = {
            "format": "csv",
            "path": "mixed.csv",
            "labelColumn": "churn",
            "featureColumns": MIXED_FEATURES,
            "validationSplit": 0.2,
        }
        layers = DENSE_16["layers"]
    training = {"epochs": 4, "learningRate": 0.01, "checkpointIntervalSeconds": 0}
    job = make_job("resumed", data, {"layers": layers}, training)
    store = tmp_path / "store"
    with pytest.raises(Interrupted):
        run(job, root, store, "r1", emit=StopAfterEpoch(2))
    assert ModelStore(store).versions("resumed") == []
    ev = Events()
    done = run(job, root, store, "r1", emit=ev)
    assert ev.of("start")[0]["resumedFromEpoch"] == 2
    assert [e["epoch"] for e in ev.of("epoch")] == [3, 4]
    assert done["modelVersion"] == 1 and done["epochsRun"] == 4
