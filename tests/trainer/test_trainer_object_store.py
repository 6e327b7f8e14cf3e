"""The trainer with data and model store in a bucket of a real S3 server (SeaweedFS,
tests/support/s3.py): reads s3:// data, publishes versions with their manifest, resumes
from a checkpoint in the bucket on another disk, mixes a bucket with a volume, trains on an
image CSV whose images are s3:// URIs, and fails with a clear reason (never the secret key)
on refused credentials or a missing object."""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

import pytest
from trainerkit import Events, Interrupted, make_job, small_cnn, stop_after

from kerasop import events
from kerasop.events import EXIT_BAD_DATA
from kerasop.objstore import CHECKPOINTS_DIR, ObjectModelStore, ObjectStore
from kerasop.spec import KerasTrainingJob
from kerasop.store import ModelStore
from kerasop_trainer.main import run_cli
from kerasop_trainer.train import run

pytestmark = pytest.mark.component


@pytest.fixture
def bucket(s3, data_root, monkeypatch) -> str:
    """A fresh prefix holding dense.csv, and the credentials of both roles in the env."""
    prefix = s3.uri(f"t-{uuid.uuid4().hex[:8]}")
    for role in ("DATA", "MODELS"):
        for k, v in s3.env(role).items():
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("KERASOP_DATA_CACHE", str(data_root.parent / f"cache-{uuid.uuid4().hex}"))
    s3.filesystem().put_file(str(data_root / "small.csv"), f"{prefix}/data/small.csv")
    return prefix


def _job(s3, bucket: str, name: str, *, data_path: str | None = None, output=None, **training):
    store = s3.store_spec("s3-creds")
    return make_job(
        name,
        {"format": "csv", "path": data_path or f"{bucket}/data/small.csv", "store": store},
        training={"epochs": 2, "batchSize": 64, **training},
        output=output if output is not None else {"uri": f"{bucket}/models", "store": store},
    )


def _models(s3, bucket: str) -> ObjectModelStore:
    from kerasop.spec import ObjectStoreSpec

    spec = ObjectStoreSpec.model_validate(s3.store_spec())
    return ObjectModelStore(f"{bucket}/models", ObjectStore(spec, "MODELS"))


def test_trains_on_s3_data_and_publishes_two_versions_to_the_bucket(s3, bucket, tmp_path):
    job = _job(s3, bucket, "dense")
    done = run(job, tmp_path / "no-volume", tmp_path / "scratch", "j1", emit=Events())
    assert done["modelVersion"] == 1
    assert done["modelPath"] == f"{bucket}/models/dense/1"
    assert done["modelFormats"] == ["keras", "onnx"]
    done2 = run(job, tmp_path / "no-volume", tmp_path / "scratch2", "j2", emit=Events())
    assert done2["modelVersion"] == 2

    models = _models(s3, bucket)
    assert models.versions("dense") == [1, 2]
    files = {f["path"] for f in models.manifest("dense", 1)["files"]}
    assert files == {"model.keras", "model.onnx", "metadata.json"}
    assert all(len(f["sha256"]) == 64 for f in models.manifest("dense", 1)["files"])
    # the scratch disk keeps nothing, and the checkpoints are gone from the bucket
    assert [p.name for p in (tmp_path / "scratch").rglob("*") if p.is_file()] == []
    assert not s3.filesystem().exists(f"{bucket}/models/dense/{CHECKPOINTS_DIR}/j1/state.json")
    # the data's lineage names the URI
    local = models.download("dense", 1, tmp_path / "dl" / "1")
    assert "sha256:" in (local / "metadata.json").read_text()


def test_resumes_from_the_checkpoint_in_the_bucket_on_another_disk(s3, bucket, tmp_path):
    job = _job(s3, bucket, "resumed", epochs=4, checkpointIntervalSeconds=0)
    with pytest.raises(Interrupted):
        run(job, tmp_path / "v", tmp_path / "node-a", "job-r", emit=stop_after(2))
    ckpt = f"{bucket}/models/resumed/{CHECKPOINTS_DIR}/job-r"
    assert s3.filesystem().exists(f"{ckpt}/state.json")
    ev = Events()
    done = run(job, tmp_path / "v", tmp_path / "node-b", "job-r", emit=ev)  # a fresh disk
    assert ev.of("start")[0]["resumedFromEpoch"] == 2
    assert [e["epoch"] for e in ev.of("epoch")] == [3, 4]
    assert done["modelVersion"] == 1 and done["epochsRun"] == 4
    assert not s3.filesystem().exists(f"{ckpt}/state.json")


def test_s3_data_with_a_model_volume_and_volume_data_with_a_bucket(s3, bucket, data_root, tmp_path):
    on_volume = _job(s3, bucket, "mixed-a", output={})
    done = run(on_volume, tmp_path / "nothing", tmp_path / "store", "m1", emit=Events())
    assert ModelStore(tmp_path / "store").versions("mixed-a") == [1]
    assert done["modelPath"] == str(tmp_path / "store" / "mixed-a" / "1")

    from_volume = _job(s3, bucket, "mixed-b", data_path="small.csv")
    done = run(from_volume, data_root, tmp_path / "scratch", "m2", emit=Events())
    assert done["modelPath"] == f"{bucket}/models/mixed-b/1"


def _cli(job, tmp_path: Path, capsys) -> tuple[int, dict, str]:
    import yaml

    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job.model_dump(mode="json", by_alias=True, exclude_none=True)))
    argv = ["--spec", str(spec), "--data-root", str(tmp_path), "--store-root", str(tmp_path / "s")]
    code = run_cli([*argv, "--job-id", "cli"])
    out = capsys.readouterr()
    failed = events.last_events(out.out.splitlines()).failed
    return code, failed.model_dump(by_alias=True) if failed else {}, out.out + out.err


def test_wrong_credentials_fail_storage_access_denied_without_the_key(
    s3, bucket, tmp_path, capsys, monkeypatch
):
    wrong = "not-" + s3.secret_key  # always differs from the real key
    for k, v in s3.env("DATA", secret_key=wrong).items():
        monkeypatch.setenv(k, v)
    code, failed, output = _cli(_job(s3, bucket, "denied"), tmp_path, capsys)
    assert code == EXIT_BAD_DATA and failed["reason"] == "StorageAccessDenied"
    assert "'kerasop'" in failed["message"] and "'s3-creds'" in failed["message"]
    assert wrong not in output and s3.secret_key not in output


def test_a_missing_object_fails_data_not_found_naming_the_uri(s3, bucket, tmp_path, capsys):
    missing = f"{bucket}/data/nope.csv"
    code, failed, output = _cli(_job(s3, bucket, "nodata", data_path=missing), tmp_path, capsys)
    assert code == EXIT_BAD_DATA and failed["reason"] == "DataNotFound"
    assert missing in failed["message"]
    assert s3.secret_key not in output


def test_a_publish_with_refused_credentials_leaves_no_version(
    s3, bucket, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("KERASOP_MODELS_AWS_SECRET_ACCESS_KEY", "not-the-key")
    code, failed, output = _cli(_job(s3, bucket, "nopub"), tmp_path, capsys)
    assert failed["reason"] == "StorageAccessDenied" and code == EXIT_BAD_DATA
    assert not s3.filesystem().exists(f"{bucket}/models/nopub")
    assert s3.secret_key not in output and "not-the-key" not in output


def _image_csv_of_uris(s3, data_root: Path, bucket: str, folder: Path) -> list[str]:
    """data_root's shapes CSV written to ``folder`` with each image uploaded to the bucket
    and named by its URI; returns the URIs."""
    with (data_root / "shapes" / "data.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    fs = s3.filesystem()
    for row in rows:
        uri = f"{bucket}/shapes/{row['path']}"
        fs.put_file(str(data_root / "shapes" / row["path"]), uri)
        row["path"] = uri
    folder.mkdir(parents=True)
    with (folder / "data.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return [row["path"] for row in rows]


def _image_job(s3, name: str) -> KerasTrainingJob:
    data = {
        "format": "imageCsv",
        "path": "shapes/data.csv",
        "store": s3.store_spec("s3-creds"),
        "validationSplit": 0.25,
        "image": {"height": 24, "width": 24},
    }
    return make_job(name, data, small_cnn(), training={"epochs": 1, "batchSize": 8}, output={})


def test_an_image_csv_naming_its_images_by_uri_trains(s3, bucket, data_root, tmp_path):
    uris = _image_csv_of_uris(s3, data_root, bucket, tmp_path / "volume" / "shapes")
    job = _image_job(s3, "shapes")
    done = run(job, tmp_path / "volume", tmp_path / "store", "img", emit=Events())
    assert done["modelVersion"] == 1
    # every image was staged once into the data cache, and the CSV stayed on the volume
    staged = sorted(p.name for p in Path(os.environ["KERASOP_DATA_CACHE"]).rglob("*.png"))
    assert staged == sorted(uri.rsplit("/", 1)[1] for uri in uris)


def test_a_missing_image_uri_fails_data_not_found_naming_it(
    s3, bucket, data_root, tmp_path, capsys
):
    uris = _image_csv_of_uris(s3, data_root, bucket, tmp_path / "shapes")
    s3.filesystem().rm_file(uris[5])
    code, failed, output = _cli(_image_job(s3, "noimage"), tmp_path, capsys)
    assert code == EXIT_BAD_DATA and failed["reason"] == "DataNotFound"
    assert uris[5] in failed["message"]
    assert s3.secret_key not in output
