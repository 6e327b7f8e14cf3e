"""A version whose model.keras holds the user's registered classes, served by the
server's Keras engine: the trainer records the modules in metadata.json ``userCode``,
the server imports exactly those (from its Python path: the job's codePath, mounted
by the operator) before loading, and answers over both protocols."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from trainerkit import Events, make_job

from kerasop_trainer.train import run

CODE = '''
import keras


@keras.saving.register_keras_serializable(package="servedcode")
class TwoLayers(keras.Model):
    """A subclassed model: only this module can rebuild it from model.keras."""

    def __init__(self, units=8, classes=3, **kwargs):
        super().__init__(**kwargs)
        self.units, self.classes = units, classes
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.out = keras.layers.Dense(classes, activation="softmax")

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "classes": self.classes}


def build(input_shape, num_classes, units=8):
    model = TwoLayers(units, num_classes)
    model(keras.ops.zeros((1, *input_shape)))  # creates the weights
    return model
'''


@pytest.fixture
def code_root(tmp_path, data_root) -> Path:
    root = tmp_path / "data"
    (root / "code").mkdir(parents=True)
    (root / "blobs.npz").symlink_to(data_root / "blobs.npz")
    (root / "code" / "servedcode.py").write_text(CODE)
    yield root
    _forget_user_code(root)


def _forget_user_code(root: Path) -> None:
    """Make this process as fresh as a server pod: the module and its classes unknown."""
    import keras

    sys.modules.pop("servedcode", None)
    keras.saving.get_custom_objects().pop("servedcode>TwoLayers", None)
    sys.path[:] = [p for p in sys.path if p != str((root / "code").absolute())]


def test_keras_engine_imports_the_recorded_user_code_and_serves_both_protocols(code_root, tmp_path):
    import keras

    from kerasop_server.config import ServerConfig
    from kerasop_server.engines import EngineError, load_engine
    from kerasop_server.runner import BackgroundServer

    job = make_job(
        "custom",
        {"format": "npz", "path": "blobs.npz", "validationSplit": 0.25},
        {"builder": {"module": "servedcode", "args": {"units": 16}}, "codePath": "code"},
        {
            "epochs": 5,
            "batchSize": 16,
            "loss": "sparse_categorical_crossentropy",
            "learningRate": 0.02,
        },
    )
    store = tmp_path / "store"
    done = run(job, code_root, store, "u1", emit=Events())
    assert done["metrics"]["accuracy"] >= 0.9, done
    vdir = Path(done["modelPath"])
    meta = json.loads((vdir / "metadata.json").read_text())
    assert meta["userCode"] == {"modules": ["servedcode"], "codePath": "code"}
    x = np.load(code_root / "blobs.npz")["x"][:5].astype("float32")
    expected = keras.saving.load_model(vdir / "model.keras").predict(x, verbose=0)
    (vdir / "model.onnx").unlink(missing_ok=True)  # as if the ONNX export had failed

    _forget_user_code(code_root)
    with pytest.raises(EngineError, match="needs the user's module servedcode"):
        load_engine("keras", vdir)  # the code folder is not on the path: a clear error

    sys.path.insert(0, str((code_root / "code").absolute()))  # the pod's PYTHONPATH
    server = BackgroundServer(
        ServerConfig(store_root=store, model="custom", engine="keras", host="127.0.0.1", port=0)
    )
    server.start(timeout=120)
    try:
        r = httpx.get(f"{server.url}/v2/models/custom")
        assert r.status_code == 200, r.text
        r = httpx.post(f"{server.url}/v1/models/custom:predict", json={"instances": x.tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["predictions"]), expected, atol=1e-5)
        body = {
            "inputs": [
                {"name": "input", "shape": [5, 12], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        r = httpx.post(f"{server.url}/v2/models/custom/infer", json=body)
        assert r.status_code == 200, r.text
        got = np.array(r.json()["outputs"][0]["data"]).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    finally:
        server.stop()
    assert "servedcode" in sys.modules  # imported by the server, from the metadata


def test_nothing_is_imported_unless_the_metadata_says_so(code_root, tmp_path):
    from kerasop_server.engines import import_user_code

    vdir = tmp_path / "v"
    vdir.mkdir()
    (vdir / "metadata.json").write_text(json.dumps({"name": "m", "spec": {"model": {}}}))
    sys.path.insert(0, str((code_root / "code").absolute()))
    assert import_user_code(vdir) == [] and "servedcode" not in sys.modules
    (vdir / "metadata.json").write_text(json.dumps({"userCode": {"modules": ["servedcode"]}}))
    assert import_user_code(vdir) == ["servedcode"] and "servedcode" in sys.modules
