"""The user's own model: a saved .keras file (Sequential, functional, subclassed with
registered classes) or builder code from a folder on the data volume. Each trains for
real, resumes after an interrupted run, publishes a version, and fails with its own
reason (and the user's traceback) when the model or the code is broken."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from trainerkit import Events, Interrupted, assert_store_clean, make_job, stop_after

from kerasop import events
from kerasop.events import EXIT_BAD_MODEL, EXIT_MODEL_MISMATCH, EXIT_USER_CODE
from kerasop.store import ModelStore
from kerasop_trainer.main import run_cli
from kerasop_trainer.train import run

BLOBS = {"format": "npz", "path": "blobs.npz", "validationSplit": 0.25}  # 12 features, 3 classes

CODE = '''
import keras


@keras.saving.register_keras_serializable(package="mycode")
class Scale(keras.layers.Layer):
    """A custom layer: the kind of class a model file needs its module for."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def build(input_shape, num_classes, units=8):
    inputs = keras.Input(input_shape)
    x = Scale(0.5)(inputs)
    x = keras.layers.Dense(units, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="built")


def build_raises(input_shape, num_classes):
    width = input_shape[0] // 0  # the user's bug
    return width


def build_not_a_model(input_shape, num_classes):
    return "a string"


def build_one_unit(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))


def build_wrong_input(input_shape, num_classes):
    inputs = keras.Input((input_shape[0] + 5,))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(inputs))
'''


@pytest.fixture
def code_root(tmp_path, data_root) -> Path:
    """A data volume with the blobs data and the user's code folder ``code/mycode.py``."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "blobs.npz").symlink_to(data_root / "blobs.npz")
    (root / "code").mkdir()
    (root / "code" / "mycode.py").write_text(CODE)
    yield root
    for name in [m for m in sys.modules if m == "mycode"]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p != str((root / "code").absolute())]


def _trains_resumes_and_publishes(job, root: Path, store: Path, job_id: str) -> dict:
    """Interrupt after epoch 2, rerun with the same job id: resumes at 2 and publishes
    (the job checkpoints every epoch: training.checkpointIntervalSeconds 0)."""
    with pytest.raises(Interrupted):
        run(job, root, store, job_id, emit=stop_after(2))
    assert ModelStore(store).versions(job.model_name) == []
    ev = Events()
    done = run(job, root, store, job_id, emit=ev)
    assert ev.of("start")[0]["resumedFromEpoch"] == 2
    assert [e["epoch"] for e in ev.of("epoch")] == list(range(3, job.spec.training.epochs + 1))
    assert done["modelVersion"] == 1 and done["epochsRun"] == job.spec.training.epochs
    vdir = Path(done["modelPath"])
    assert {"model.keras", "metadata.json"} <= {p.name for p in vdir.iterdir()}
    return done


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_model_file_keeps_its_compile_settings_and_weights(kind, code_root, tmp_path):
    """No compile settings in the spec: the file's own loss (sparse categorical, which also
    decides how labels are encoded), optimizer and metrics are used."""
    import keras

    sys.path.insert(0, str(code_root / "code"))
    import mycode

    keras.utils.set_random_seed(3)
    if kind == "sequential":
        model = keras.Sequential(
            [keras.Input((12,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
        )
    elif kind == "functional":
        inputs = keras.Input((12,), name="x")
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    else:
        model = mycode.build((12,), 3, units=6)
    model.compile(
        optimizer=keras.optimizers.RMSprop(0.01),
        loss="sparse_categorical_crossentropy"
        if kind != "sequential"
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    (code_root / "models").mkdir()
    model.save(code_root / "models" / "net.keras")

    spec = {"file": {"path": "models/net.keras"}}
    if kind == "subclassed":
        spec = {"file": {"path": "models/net.keras", "imports": ["mycode"]}, "codePath": "code"}
    job = make_job(
        f"file-{kind}", BLOBS, spec, {"epochs": 4, "batchSize": 16, "checkpointIntervalSeconds": 0}
    )
    done = _trains_resumes_and_publishes(job, code_root, tmp_path / "store", "f1")
    assert done["metrics"]["accuracy"] >= 0.9, done

    trained = keras.saving.load_model(Path(done["modelPath"]) / "model.keras")
    assert type(trained.optimizer).__name__ == "RMSprop"  # the file's own optimizer
    assert trained.loss == model.loss or type(trained.loss) is type(model.loss)
    meta = json.loads((Path(done["modelPath"]) / "metadata.json").read_text())
    assert meta["output"]["kind"] == "multiclass" and meta["output"]["shape"] == [3]


def test_model_file_weights_are_the_start_and_spec_compile_wins(code_root, tmp_path):
    import keras

    keras.utils.set_random_seed(4)
    inputs = keras.Input((12,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    (code_root / "models").mkdir()
    model.save(code_root / "models" / "net.keras")
    before = model.get_weights()

    # the spec's settings win: sgd with a vanishing learning rate leaves the weights be
    job = make_job(
        "finetune",
        BLOBS,
        {"file": {"path": "models/net.keras"}},
        {
            "epochs": 1,
            "optimizer": "sgd",
            "learningRate": 1e-9,
            "loss": "sparse_categorical_crossentropy",
        },
    )
    done = run(job, code_root, tmp_path / "store", "ft", emit=Events())
    trained = keras.saving.load_model(Path(done["modelPath"]) / "model.keras")
    assert type(trained.optimizer).__name__ == "SGD"
    for a, b in zip(before, trained.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_builder_from_code_path_trains_resumes_and_publishes(code_root, tmp_path):
    job = make_job(
        "built",
        BLOBS,
        {
            "builder": {"module": "mycode", "function": "build", "args": {"units": 12}},
            "codePath": "code",
        },
        {
            "epochs": 5,
            "batchSize": 16,
            "loss": "sparse_categorical_crossentropy",
            "learningRate": 0.02,
            "checkpointIntervalSeconds": 0,  # every epoch: the test resumes at epoch 2
        },
    )
    done = _trains_resumes_and_publishes(job, code_root, tmp_path / "store", "b1")
    assert done["metrics"]["accuracy"] >= 0.9, done
    import keras

    trained = keras.saving.load_model(Path(done["modelPath"]) / "model.keras")
    # behind the standardization front (blobs is a numeric table)
    assert trained.get_layer("built").get_layer(index=2).units == 12  # the args reached it


def _fails(root: Path, tmp_path: Path, model: dict, training: dict | None = None):
    """Run the trainer CLI; return (exit code, failed event); the store must stay clean."""
    job = make_job(
        "broken", BLOBS, model, {"loss": "sparse_categorical_crossentropy", **(training or {})}
    )
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(job.model_dump(mode="json", by_alias=True, exclude_none=True)))
    store = tmp_path / "store"
    out = tmp_path / "out.txt"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = run_cli(
            [
                "--spec",
                str(spec),
                "--data-root",
                str(root),
                "--store-root",
                str(store),
                "--job-id",
                "x",
                "--termination-log",
                str(out),
            ]
        )
    failed = events.last_events(buf.getvalue().splitlines()).failed.model_dump(by_alias=True)
    assert json.loads(out.read_text())["reason"] == failed["reason"]
    assert_store_clean(store, "broken")
    assert not ModelStore(store).checkpoint_dir("broken", "x").exists()
    return code, failed


def test_bad_models_and_code_fail_with_their_own_reasons(code_root, tmp_path):
    (code_root / "models").mkdir()
    (code_root / "models" / "junk.keras").write_bytes(b"not a zip file")
    code, failed = _fails(code_root, tmp_path, {"file": {"path": "models/missing.keras"}})
    assert (code, failed["reason"]) == (EXIT_BAD_MODEL, "BadModel")
    assert "does not exist" in failed["message"]
    code, failed = _fails(code_root, tmp_path, {"file": {"path": "models/junk.keras"}})
    assert (code, failed["reason"]) == (EXIT_BAD_MODEL, "BadModel")
    assert "not a .keras archive" in failed["message"]

    # a file whose custom class is not importable: the load error and its traceback
    import keras

    sys.path.insert(0, str(code_root / "code"))
    import mycode

    model = mycode.build((12,), 3)
    model.save(code_root / "models" / "custom.keras")
    del sys.modules["mycode"]
    keras.saving.get_custom_objects().pop("mycode>Scale", None)
    sys.path.remove(str(code_root / "code"))
    code, failed = _fails(code_root, tmp_path, {"file": {"path": "models/custom.keras"}})
    assert (code, failed["reason"]) == (EXIT_BAD_MODEL, "BadModel")
    assert "model.file.imports" in failed["message"] and "Traceback" in failed["message"]

    builder = {"codePath": "code"}
    code, failed = _fails(
        code_root, tmp_path, {**builder, "builder": {"module": "nothere", "function": "build"}}
    )
    assert (code, failed["reason"]) == (EXIT_USER_CODE, "UserCodeError")
    assert "module nothere not found" in failed["message"]
    code, failed = _fails(
        code_root, tmp_path, {**builder, "builder": {"module": "mycode", "function": "nope"}}
    )
    assert (code, failed["reason"]) == (EXIT_USER_CODE, "UserCodeError")
    assert "has no function nope" in failed["message"]
    code, failed = _fails(
        code_root,
        tmp_path,
        {**builder, "builder": {"module": "mycode", "function": "build_raises"}},
    )
    assert (code, failed["reason"]) == (EXIT_USER_CODE, "UserCodeError")
    assert "ZeroDivisionError" in failed["message"] and "mycode.py" in failed["message"]
    assert "input_shape[0] // 0" in failed["message"]  # the user's own line
    code, failed = _fails(
        code_root,
        tmp_path,
        {**builder, "builder": {"module": "mycode", "function": "build_not_a_model"}},
    )
    assert (code, failed["reason"]) == (EXIT_USER_CODE, "UserCodeError")
    assert "returned str, not a keras.Model" in failed["message"]
    code, failed = _fails(
        code_root,
        tmp_path,
        {**builder, "builder": {"module": "mycode", "function": "build_wrong_input"}},
    )
    assert (code, failed["reason"]) == (EXIT_MODEL_MISMATCH, "ModelDataMismatch")
    assert "does not take the data's input" in failed["message"]
    # the right input, but one output unit for three classes
    code, failed = _fails(
        code_root,
        tmp_path,
        {**builder, "builder": {"module": "mycode", "function": "build_one_unit"}},
    )
    assert (code, failed["reason"]) == (EXIT_MODEL_MISMATCH, "ModelDataMismatch")
    assert "outputs shape [None, 1], the labels need 3 softmax units" in failed["message"]


def test_missing_code_path_is_a_user_code_error(code_root, tmp_path):
    code, failed = _fails(
        code_root, tmp_path, {"builder": {"module": "mycode"}, "codePath": "no-such-folder"}
    )
    assert (code, failed["reason"]) == (EXIT_USER_CODE, "UserCodeError")
    assert "no-such-folder is not a folder" in failed["message"]
