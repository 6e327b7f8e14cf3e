"""The trainer with data and model store in GCS (a real fake-gcs-server, tests/support/gcs.py),
as tests/trainer/test_trainer_object_store.py does with S3: reads gs:// data, resumes from the
checkpoint in the bucket on another disk, publishes versions with their manifest, and fails
with DataNotFound naming a missing object."""

from __future__ import annotations

import uuid

import pytest
from trainerkit import Events, Interrupted, make_job, stop_after

from kerasop.events import EXIT_BAD_DATA
from kerasop.objstore import CHECKPOINTS_DIR, ObjectModelStore
from kerasop.spec import ObjectStoreSpec
from kerasop_trainer.errors import TrainerError
from kerasop_trainer.train import run

pytestmark = pytest.mark.component


@pytest.fixture
def bucket(gcs, data_root, monkeypatch) -> str:
    """A fresh prefix holding small.csv."""
    prefix = gcs.uri(f"t-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("KERASOP_DATA_CACHE", str(data_root.parent / f"cache-{uuid.uuid4().hex}"))
    gcs.filesystem().put_file(str(data_root / "small.csv"), f"{prefix}/data/small.csv")
    return prefix


def _job(gcs, bucket: str, name: str, data_path: str | None = None, **training):
    store = gcs.store_spec()
    return make_job(
        name,
        {"format": "csv", "path": data_path or f"{bucket}/data/small.csv", "store": store},
        training={"epochs": 2, "batchSize": 64, **training},
        output={"uri": f"{bucket}/models", "store": store},
    )


def test_resumes_from_the_bucket_on_another_disk_and_publishes_versions(gcs, bucket, tmp_path):
    job = _job(gcs, bucket, "resumed", epochs=4, checkpointIntervalSeconds=0)
    with pytest.raises(Interrupted):
        run(job, tmp_path / "v", tmp_path / "node-a", "job-r", emit=stop_after(2))
    ckpt = f"{bucket}/models/resumed/{CHECKPOINTS_DIR}/job-r"
    assert gcs.filesystem().exists(f"{ckpt}/state.json")
    ev = Events()
    done = run(job, tmp_path / "v", tmp_path / "node-b", "job-r", emit=ev)  # a fresh disk
    assert ev.of("start")[0]["resumedFromEpoch"] == 2
    assert done["modelVersion"] == 1 and done["modelPath"] == f"{bucket}/models/resumed/1"
    assert not gcs.filesystem().exists(f"{ckpt}/state.json")
    assert (
        run(job, tmp_path / "v", tmp_path / "node-c", "job-s", emit=Events())["modelVersion"] == 2
    )

    models = ObjectModelStore.open(
        f"{bucket}/models", ObjectStoreSpec.model_validate(gcs.store_spec())
    )
    assert models.versions("resumed") == [1, 2]
    files = {f["path"]: f for f in models.manifest("resumed", 1)["files"]}
    assert set(files) == {"model.keras", "model.onnx", "metadata.json"}
    local = models.download("resumed", 1, tmp_path / "dl" / "1")
    assert (local / "model.keras").stat().st_size == files["model.keras"]["size"]


def test_a_missing_object_fails_data_not_found_naming_the_uri(gcs, bucket, tmp_path):
    missing = f"{bucket}/data/nope.csv"
    with pytest.raises(TrainerError) as failed:
        run(_job(gcs, bucket, "nodata", missing), tmp_path, tmp_path / "s", "j", emit=Events())
    assert failed.value.reason == "DataNotFound" and failed.value.exit_code == EXIT_BAD_DATA
    assert missing in failed.value.message
