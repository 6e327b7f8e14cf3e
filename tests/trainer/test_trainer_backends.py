"""training.backend: jax on a single worker trains and publishes a servable version
(tensorflow is every other test's backend; torch is not offered: it is not installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from trainerkit import DENSE_MODEL, make_job

from kerasop import events
from kerasop.store import ModelStore


def test_jax_single_worker_trains_and_publishes(tmp_path, data_root, store):
    job = make_job(
        "jaxed",
        {"format": "csv", "path": "small.csv", "validationSplit": 0.2},
        DENSE_MODEL,
        {"epochs": 3, "batchSize": 16, "backend": "jax", "learningRate": 0.01},
        output={"formats": ["savedmodel"]},
    )
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(job.model_dump(mode="json", by_alias=True, exclude_none=True)))
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND",)}
    result = subprocess.run(
        [sys.executable, "-m", "kerasop_trainer.main", "--spec", str(spec),
         "--data-root", str(data_root), "--store-root", str(store), "--job-id", "jx"],
        capture_output=True, text=True, timeout=600, check=False,
        env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    last = events.last_events(result.stdout.splitlines())
    got = {kind: getattr(last, kind).model_dump(by_alias=True) for kind in ("start", "done")}
    assert got["start"]["backend"] == "jax" and got["start"]["workers"] == 1
    assert got["done"]["modelVersion"] == 1 and got["done"]["metrics"]["accuracy"] >= 0.8

    vdir = ModelStore(store).version_dir("jaxed", 1)
    assert {"saved_model.pb", "model.keras", "metadata.json"} <= {p.name for p in vdir.iterdir()}
    assert got["done"]["modelFormats"] == ["keras", "savedmodel"]
    # the SavedModel (exported under TensorFlow from model.keras) computes what Keras does
    import keras
    import tensorflow as tf

    x = np.loadtxt(data_root / "small.csv", delimiter=",", skiprows=1, max_rows=4)[:, :32]
    x = x.astype("float32")
    expected = keras.saving.load_model(vdir / "model.keras").predict(x, verbose=0)
    saved = tf.saved_model.load(str(vdir))
    served = saved.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_tensorflow_runs_do_not_load_jax_until_asked() -> None:
    """TensorFlow imports JAX (a second XLA runtime, ~100 MB) when it is installed; the
    trainer hides it during that import, and code that wants JAX later still gets it."""
    code = (
        "import sys\n"
        "from kerasop_trainer.distributed import import_tensorflow_without_jax\n"
        "import_tensorflow_without_jax()\n"
        "import keras\n"
        "print(keras.backend.backend(), 'jaxlib' in sys.modules)\n"
        "import jax.numpy as jnp\n"
        "print(int(jnp.arange(3).sum()), 'jaxlib' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
        env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:2] == ["tensorflow False", "3 True"], result.stdout
