"""The trainer really trains (tiny data, CPU) and publishes complete versions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from trainerkit import Events, assert_store_clean, make_job, small_cnn

from kerasop import events
from kerasop.events import EXIT_BAD_DATA, EXIT_BAD_SPEC, EXIT_MODEL_MISMATCH
from kerasop.store import ModelStore
from kerasop_trainer import sample_data, train
from kerasop_trainer.errors import TrainerError
from kerasop_trainer.main import run_cli, termination_message
from kerasop_trainer.train import run


def test_dense_csv_reaches_090_and_publishes_versions(data_root, store, monkeypatch):
    job = make_job(
        "dense",
        {"format": "csv", "path": "dense.csv", "validationSplit": 0.2},
        training={"epochs": 5, "batchSize": 32},
        output={"formats": ["savedmodel", "onnx"]},
    )
    evaluations: list[object] = []
    evaluate = train._evaluate
    monkeypatch.setattr(
        train, "_evaluate", lambda model, ds: evaluations.append(ds) or evaluate(model, ds)
    )
    ev = Events()
    done = run(job, data_root, store, "job-a", emit=ev)

    # the final metrics are the last epoch's validation pass: no second evaluation
    last = ev.of("epoch")[-1]["metrics"]
    assert done["metrics"] == {"loss": last["val_loss"], "accuracy": last["val_accuracy"]}
    assert evaluations == []
    # the article's network learns the sample data
    assert done["metrics"]["accuracy"] >= 0.9, done
    assert done["modelVersion"] == 1 and done["epochsRun"] == 5
    assert [e["epoch"] for e in ev.of("epoch")] == [1, 2, 3, 4, 5]
    assert ev.of("start")[0]["resumedFromEpoch"] == 0
    assert ev.of("done") == [done]

    vdir = store / "dense" / "1"
    assert done["modelPath"] == str(vdir)
    assert {"saved_model.pb", "variables", "model.keras", "model.onnx", "metadata.json"} <= {
        p.name for p in vdir.iterdir()
    }
    assert done["modelFormats"] == ["keras", "savedmodel", "onnx"]
    assert (vdir / "variables" / "variables.index").exists()
    meta = json.loads((vdir / "metadata.json").read_text())
    assert set(meta) == {
        "name",
        "createdAt",
        "input",
        "output",
        "metrics",
        "epochsRun",
        "spec",
        "versions",
        "savedModelSignature",
        "lineage",
    }
    assert meta["lineage"]["job"] == "dense" and meta["lineage"]["jobId"] == "job-a"
    assert meta["lineage"]["dataFingerprint"].startswith("sha256:")
    assert meta["name"] == "dense" and meta["createdAt"].endswith("Z")
    assert meta["input"]["kind"] == "tabular" and meta["input"]["shape"] == [784]
    assert meta["input"]["dtype"] == "float32" and len(meta["input"]["featureNames"]) == 784
    assert meta["output"] == {"kind": "binary", "shape": [1], "classNames": ["0", "1"]}
    assert meta["metrics"] == done["metrics"] and meta["epochsRun"] == 5
    assert meta["spec"]["data"]["format"] == "csv" and meta["spec"]["training"]["epochs"] == 5
    assert set(meta["versions"]) == {"keras", "tensorflow", "python"}
    assert meta["savedModelSignature"] == "serve"
    # checkpoints are gone once the version is published
    assert not (store / "dense" / ".checkpoints").exists()

    # model.keras reloads safely and the SavedModel's "serve" signature agrees with it
    import keras
    import tensorflow as tf

    x = np.random.default_rng(0).random((3, 784)).astype("float32")
    reloaded = keras.saving.load_model(vdir / "model.keras", safe_mode=True)
    saved = tf.saved_model.load(str(vdir))
    np.testing.assert_allclose(
        np.asarray(saved.serve(tf.constant(x))), reloaded.predict(x, verbose=0), atol=1e-5
    )

    # a second run publishes version 2, version 1 untouched; by default without a SavedModel
    job2 = make_job(
        "dense",
        {"format": "csv", "path": "dense.csv", "validationSplit": 0.2},
        training={"epochs": 2, "earlyStopping": {"monitor": "val_loss", "patience": 1}},
    )
    done2 = run(job2, data_root, store, "job-b", emit=Events())
    assert len(evaluations) == 1  # early stopping restored the best epoch: measured again
    assert done2["modelVersion"] == 2 and ModelStore(store).versions("dense") == [1, 2]
    assert ModelStore(store).metadata("dense", 1).to_json_dict()["epochsRun"] == 5
    assert sorted(p.name for p in (store / "dense").iterdir()) == ["1", "2"]
    assert done2["modelFormats"] == ["keras", "onnx"]
    v2 = store / "dense" / "2"
    assert sorted(p.name for p in v2.iterdir()) == ["metadata.json", "model.keras", "model.onnx"]
    assert "savedModelSignature" not in json.loads((v2 / "metadata.json").read_text())


@pytest.mark.parametrize(
    "name,data,model,training,kind,classes",
    [
        (
            "imgcsv",
            {
                "format": "imageCsv",
                "path": "shapes/data.csv",
                "validationSplit": 0.25,
                "image": {"height": 24, "width": 24},
            },
            small_cnn(),
            {},
            "image",
            ["circle", "square"],
        ),
        (
            "imgfolder",
            {
                "format": "imageFolder",
                "path": "folder",
                "image": {"height": 24, "width": 24, "channels": 1},
            },
            small_cnn(3, "softmax"),
            {"loss": "categorical_crossentropy"},
            "image",
            ["circle", "square", "triangle"],
        ),
        (
            "npz",
            {"format": "npz", "path": "blobs.npz", "validationSplit": 0.2},
            {
                "layers": [
                    {"type": "Dense", "units": 8, "activation": "relu"},
                    {"type": "Dense", "units": 3, "activation": "softmax"},
                ]
            },
            {"loss": "sparse_categorical_crossentropy"},
            "tabular",
            ["0", "1", "2"],
        ),
    ],
)
def test_formats_train_and_publish(data_root, store, name, data, model, training, kind, classes):
    job = make_job(name, data, model, {"epochs": 2, "batchSize": 8, **training})
    done = run(job, data_root, store, "j", emit=Events())
    meta = ModelStore(store).metadata(name, done["modelVersion"]).to_json_dict()
    assert meta["input"]["kind"] == kind and meta["output"]["classNames"] == classes
    if kind == "image":
        h, w, c = meta["input"]["shape"]
        assert meta["input"]["image"] == {"height": h, "width": w, "channels": c}
    # what the trainer reported is what it published, for a model with one output per class
    assert meta["metrics"] == done["metrics"] and "accuracy" in meta["metrics"]
    assert meta["output"]["shape"] == [len(classes) if len(classes) > 2 else 1]


def test_regression(tmp_path, store, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((120, 3))
    y = x @ np.array([1.0, -2.0, 0.5])
    rows = "\n".join(",".join(f"{v:.4f}" for v in (*r, t)) for r, t in zip(x, y, strict=False))
    (tmp_path / "r.csv").write_text("a,b,c,target\n" + rows + "\n")
    job = make_job(
        "reg",
        {"format": "csv", "path": "r.csv", "labelColumn": "target"},
        {"layers": [{"type": "Dense", "units": 1}]},
        {"loss": "mean_squared_error", "epochs": 8, "learningRate": 0.05, "mixedPrecision": True},
    )
    seen = Events()
    done = run(job, tmp_path, store, "j", emit=seen)
    assert set(done["metrics"]) == {"loss", "mae"}  # default metrics become mae
    # it learned: the loss fell, and ends below what always answering the mean scores
    losses = [e["metrics"]["loss"] for e in seen.of("epoch")]
    assert len(losses) == 8 and losses[-1] < losses[0] / 2, losses
    assert done["metrics"]["loss"] < float(np.var(y)), (done["metrics"], np.var(y))
    meta = ModelStore(store).metadata("reg", 1).to_json_dict()
    assert meta["output"] == {"kind": "regression", "shape": [1]}
    # No GPU here: one line says so, and mixedPrecision falls back to float32 with its reason.
    err = capsys.readouterr().err
    assert "kerasop-train: note: no GPU visible: training on the CPU" in err
    assert "mixedPrecision is set but no GPU is visible: training in float32" in err


def test_mixed_precision_keeps_the_output_layer_float32(data_root):
    """What a GPU run does (the trainer enables it only when a GPU is visible)."""
    import keras

    from kerasop.spec import DataSpec, ModelSpec, TrainingSpec
    from kerasop_trainer.data import load_data
    from kerasop_trainer.model import build_model, compile_model

    data = load_data(
        DataSpec(format="npz", path="blobs.npz"), data_root, "sparse_categorical_crossentropy"
    )
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(
            ModelSpec.model_validate(
                {
                    "layers": [
                        {"type": "Dense", "units": 8, "activation": "relu"},
                        {"type": "Dense", "units": 3, "activation": "softmax"},
                    ]
                }
            ),
            data,
            data_root=data_root,
            mixed_precision=True,
        )
        compile_model(model, TrainingSpec(loss="sparse_categorical_crossentropy"), data)
        assert model.layers[0].compute_dtype == "float16"
        assert model.layers[-1].dtype_policy.name == "float32"
        history = model.fit(data.train.x[:64], data.train.y[:64], epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ---------------------------------------------------------------- failures


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


BAD_CASES = [
    # id, files, data, model, training, exit code, message fragment
    (
        "missing-file",
        {},
        {"format": "csv", "path": "nope.csv"},
        None,
        {},
        EXIT_BAD_DATA,
        "does not exist",
    ),
    (
        "empty-file",
        {"e.csv": ""},
        {"format": "csv", "path": "e.csv"},
        None,
        {},
        EXIT_BAD_DATA,
        "is empty",
    ),
    (
        "no-label-column",
        {"t.csv": "a,b\n1,2\n"},
        {"format": "csv", "path": "t.csv"},
        None,
        {},
        EXIT_BAD_DATA,
        "no label column 'label'",
    ),
    (
        "non-numeric",
        {"t.csv": "a,b,label\n1,2,0\n1,x,1\n"},
        {"format": "csv", "path": "t.csv"},
        None,
        {},
        EXIT_BAD_DATA,
        "column 'b' is not numeric",
    ),
    (
        "split-no-rows",
        {"t.csv": "a,label\n1,0\n"},
        {"format": "csv", "path": "t.csv", "validationSplit": 0.5},
        None,
        {},
        EXIT_BAD_DATA,
        "leaves",
    ),
    (
        "val-classes",
        {"t.csv": "a,label\n1,0\n2,1\n", "v.csv": "a,label\n1,0\n2,2\n"},
        {"format": "csv", "path": "t.csv", "validationPath": "v.csv"},
        None,
        {},
        EXIT_BAD_DATA,
        "different classes",
    ),
    (
        "conv-on-tabular",
        {"t.csv": "a,b,label\n1,2,0\n3,4,1\n"},
        {"format": "csv", "path": "t.csv"},
        {
            "layers": [
                {"type": "Conv2D", "filters": 2, "kernelSize": 3},
                {"type": "Dense", "units": 1, "activation": "sigmoid"},
            ]
        },
        {},
        EXIT_MODEL_MISMATCH,
        "model.layers[0] (Conv2D) does not fit",
    ),
    (
        "units-vs-classes",
        {"t.csv": "a,label\n1,a\n2,b\n3,c\n"},
        {"format": "csv", "path": "t.csv"},
        {"layers": [{"type": "Dense", "units": 2, "activation": "softmax"}]},
        {"loss": "sparse_categorical_crossentropy"},
        EXIT_MODEL_MISMATCH,
        "has 3 classes",
    ),
    (
        "binary-needs-1-unit",
        {"t.csv": "a,label\n1,0\n2,1\n"},
        {"format": "csv", "path": "t.csv"},
        {"layers": [{"type": "Dense", "units": 2, "activation": "softmax"}]},
        {},
        EXIT_MODEL_MISMATCH,
        "needs 1 unit",
    ),
    (
        "no-flatten",
        {},
        {"format": "imageFolder", "path": "imgs"},
        {
            "layers": [
                {"type": "Conv2D", "filters": 2, "kernelSize": 3},
                {"type": "Dense", "units": 1, "activation": "sigmoid"},
            ]
        },
        {},
        EXIT_MODEL_MISMATCH,
        "add Flatten",
    ),
    (
        "transfer-on-tabular",
        {"t.csv": "a,label\n1,0\n2,1\n"},
        {"format": "csv", "path": "t.csv"},
        {"transfer": {"application": "VGG16", "weights": "none"}},
        {},
        EXIT_MODEL_MISMATCH,
        "needs image data",
    ),
    (
        "weights-file-missing",
        {},
        {"format": "imageFolder", "path": "imgs"},
        {"transfer": {"application": "VGG16", "weights": "file", "weightsPath": "w.weights.h5"}},
        {},
        EXIT_BAD_DATA,
        "does not exist",
    ),
    (
        "bad-monitor",
        {"t.csv": "a,label\n1,0\n2,1\n"},
        {"format": "csv", "path": "t.csv"},
        None,
        {"earlyStopping": {"monitor": "val_auc"}},
        EXIT_BAD_SPEC,
        "earlyStopping.monitor",
    ),
    (
        "corrupt-image",
        {"bad/a/one.png": "not a png", "bad/b/two.png": "not a png either"},
        {"format": "imageFolder", "path": "bad"},
        small_cnn(),
        {},
        EXIT_BAD_DATA,
        "one.png",
    ),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_fails_fast_and_leaves_store_clean(tmp_path, store, case):
    _, files, data, model, training, code, fragment = case
    for rel, text in files.items():
        _write(tmp_path / rel, text)
    sample_data.write_image_folder(tmp_path / "imgs", per_class=2, size=16)
    ev = Events()
    with pytest.raises(TrainerError) as info:
        run(make_job("bad", data, model, training), tmp_path, store, "j", emit=ev)
    assert info.value.exit_code == code, info.value
    assert fragment in info.value.message
    assert ev.of("epoch") == []
    assert_store_clean(store, "bad")
    assert not (store / "bad" / ".checkpoints").exists()


def test_cli_exit_codes_failed_event_and_termination_log(tmp_path, store, capsys):
    _write(tmp_path / "data" / "t.csv", "a,b,label\n1,2,0\n1,x,1\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "apiVersion: kerasop.io/v1alpha1\nkind: KerasTrainingJob\nmetadata: {name: cli}\n"
        "spec:\n  data: {format: csv, path: t.csv}\n"
        "  model: {layers: [{type: Dense, units: 1, activation: sigmoid}]}\n"
    )
    log = tmp_path / "termination-log"
    argv = [
        "--spec",
        str(spec),
        "--data-root",
        str(tmp_path / "data"),
        "--store-root",
        str(store),
        "--job-id",
        "j1",
        "--termination-log",
        str(log),
    ]
    assert run_cli(argv) == EXIT_BAD_DATA
    failed = events.last_events(capsys.readouterr().out.splitlines()).failed.model_dump(
        by_alias=True
    )
    assert failed["exitCode"] == EXIT_BAD_DATA and failed["reason"] == "BadData"
    assert "column 'b' is not numeric" in failed["message"]
    assert json.loads(log.read_text()) == failed
    assert_store_clean(store, "cli")

    spec.write_text(spec.read_text().replace("format: csv", "format: parquet"))
    assert run_cli(argv) == EXIT_BAD_SPEC
    failed = events.last_events(capsys.readouterr().out.splitlines()).failed.model_dump(
        by_alias=True
    )
    assert failed["reason"] == "InvalidSpec" and "spec.data.format" in failed["message"]


def test_termination_message_is_bounded():
    event = {"kerasop": "failed", "reason": "BadData", "message": "é" * 10000, "exitCode": 3}
    text = termination_message(event)
    assert len(text.encode()) <= events.TERMINATION_MESSAGE_LIMIT
    parsed = json.loads(text)
    assert parsed["exitCode"] == 3 and parsed["message"].endswith("...")


def test_finished_marks_the_last_epochs_checkpoint_without_saving_it_again(tmp_path):
    """After fit the last epoch's checkpoint is marked finished, not written a second time."""
    import keras

    from kerasop_trainer.checkpoints import Checkpoints

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoints = Checkpoints(tmp_path / "ckpt")
    checkpoints.save(model, 3)
    written = (tmp_path / "ckpt" / "epoch-00003.keras").stat().st_mtime_ns
    assert checkpoints.latest()["finished"] is False
    checkpoints.mark_finished(3)
    latest = checkpoints.latest()
    assert latest["epoch"] == 3 and latest["finished"] is True
    assert latest["path"].stat().st_mtime_ns == written
    checkpoints.mark_finished(4)  # not the checkpoint on disk: nothing changes
    assert checkpoints.latest()["epoch"] == 3


@pytest.mark.parametrize(("interval", "saved"), [(None, [None, None, 3]), (0, [1, 2, 3])])
def test_checkpoints_wait_for_their_interval_but_the_last_epoch_is_saved(
    interval, saved, data_root, store
):
    """Short epochs are not saved until checkpointIntervalSeconds (default 60 s) have
    passed, except the last one, which is on disk before its epoch event; 0: every epoch."""
    training = {"epochs": 3, "batchSize": 16}
    if interval is not None:
        training["checkpointIntervalSeconds"] = interval
    job = make_job("spaced", {"format": "csv", "path": "small.csv"}, training=training)
    assert job.spec.training.checkpoint_interval_seconds == (60 if interval is None else 0)
    state = ModelStore(store).checkpoint_dir("spaced", "s1") / "state.json"
    on_disk: list[int | None] = []

    def emit(line: str) -> None:
        event = events.decode(line)
        if event is not None and event.kerasop == "epoch":
            on_disk.append(json.loads(state.read_text())["epoch"] if state.exists() else None)

    done = run(job, data_root, store, "s1", emit=emit)
    assert on_disk == saved
    assert done["epochsRun"] == 3 and not state.exists()  # cleared once published
