"""kerasop.objstore against a real S3 server (SeaweedFS, tests/support/s3.py): conditional
puts, versions with manifests, downloads checked against them, data staging, refused
credentials, a store that goes away and comes back."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kerasop.objstore import (
    ChecksumMismatch,
    DataNotFound,
    ObjectModelStore,
    ObjectStore,
    StorageAccessDenied,
    StoreUnreachable,
)
from kerasop.spec import ObjectStoreSpec

pytestmark = pytest.mark.component


@pytest.fixture
def prefix(s3) -> str:
    return s3.uri(f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def store(s3, monkeypatch) -> ObjectStore:
    for k, v in s3.env("MODELS").items():
        monkeypatch.setenv(k, v)
    spec = ObjectStoreSpec.model_validate(s3.store_spec("models-creds"))
    return ObjectStore(spec, "MODELS", retry_seconds=5)


def _version_folder(root: Path, text: str) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.keras").write_bytes(text.encode() * 1000)
    (root / "metadata.json").write_text(json.dumps({"name": text}))
    (root / "sub" / "part.bin").write_bytes(b"\0\1" * 5000)
    return root


def test_a_second_if_none_match_put_is_refused_with_precondition_failed(s3):
    """What "claim version N" rests on: SeaweedFS honours If-None-Match: * on PutObject."""
    import botocore.session
    from botocore.exceptions import ClientError

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name="us-east-1",
    )
    key = f"claims/{uuid.uuid4().hex}"
    client.put_object(Bucket=s3.bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=s3.bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    assert client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == b"first"


def test_publish_lists_downloads_and_verifies_a_version(store, prefix, tmp_path):
    models = ObjectModelStore(prefix, store)
    assert models.versions("m") == [] and models.latest("m") is None
    local = _version_folder(tmp_path / "v", "one")
    assert models.publish("m", local) == 1
    assert models.publish("m", _version_folder(tmp_path / "w", "two")) == 2
    assert models.versions("m") == [1, 2]

    manifest = models.manifest("m", 1)
    assert sorted(f["path"] for f in manifest["files"]) == [
        "metadata.json",
        "model.keras",
        "sub/part.bin",
    ]
    got = models.download("m", 1, tmp_path / "dl" / "1")
    assert (got / "model.keras").read_bytes() == (local / "model.keras").read_bytes()
    assert (got / "sub" / "part.bin").read_bytes() == b"\0\1" * 5000
    assert not [p for p in (tmp_path / "dl").iterdir() if p.name.startswith(".")]


def test_a_version_without_its_manifest_does_not_exist(store, prefix, tmp_path, s3):
    """Files uploaded, manifest not (a trainer killed mid-upload): not listed, and the next
    publish takes the next number rather than writing over it."""
    models = ObjectModelStore(prefix, store)
    s3.filesystem().pipe_file(f"{prefix}/m/.claims/1", b"")
    s3.filesystem().pipe_file(f"{prefix}/m/1/model.keras", b"half")
    assert models.versions("m") == []
    assert models.publish("m", _version_folder(tmp_path / "v", "x")) == 2
    assert models.versions("m") == [2]


def test_concurrent_publishes_get_distinct_versions(store, prefix, tmp_path):
    models = ObjectModelStore(prefix, store)
    folders = [_version_folder(tmp_path / str(i), f"m{i}") for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda f: models.publish("m", f), folders))
    assert sorted(versions) == [1, 2, 3, 4]
    # each number holds the folder that claimed it
    for folder, version in zip(folders, versions, strict=True):
        name = json.loads(models.store.read_bytes(f"{prefix}/m/{version}/metadata.json"))
        assert name == {"name": f"m{folder.name}"}


def test_a_corrupted_object_is_refused_and_nothing_appears(store, prefix, tmp_path, s3):
    models = ObjectModelStore(prefix, store)
    models.publish("m", _version_folder(tmp_path / "v", "ok"))
    s3.filesystem().pipe_file(f"{prefix}/m/1/model.keras", b"tampered")
    dest = tmp_path / "dl" / "1"
    with pytest.raises(ChecksumMismatch, match=r"m/1/model.keras"):
        models.download("m", 1, dest)
    assert not dest.exists() and list((tmp_path / "dl").iterdir()) == []


def test_stage_copies_a_file_and_a_prefix_and_names_what_is_missing(store, prefix, tmp_path):
    fs = store.fs
    fs.pipe_file(f"{prefix}/data/train.csv", b"a,label\n1,0\n")
    fs.pipe_file(f"{prefix}/imgs/cat/1.png", b"png1")
    fs.pipe_file(f"{prefix}/imgs/dog/2.png", b"png2")
    staged = store.stage(f"{prefix}/data/train.csv", tmp_path / "cache")
    assert staged.read_bytes() == b"a,label\n1,0\n" and staged.name == "train.csv"
    assert store.stage(f"{prefix}/data/train.csv", tmp_path / "cache") == staged  # cached
    folder = store.stage(f"{prefix}/imgs/", tmp_path / "cache")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == [
        "cat/1.png",
        "dog/2.png",
    ]
    with pytest.raises(DataNotFound, match=rf"{prefix}/data/nope.csv"):
        store.stage(f"{prefix}/data/nope.csv", tmp_path / "cache")
    with pytest.raises(DataNotFound):
        store.stage(f"{prefix}/empty/", tmp_path / "cache")


def test_wrong_credentials_name_the_bucket_and_the_secret_never_the_key(s3, monkeypatch):
    wrong = "not-" + s3.secret_key  # always differs from the real key
    for k, v in s3.env("MODELS", secret_key=wrong).items():
        monkeypatch.setenv(k, v)
    spec = ObjectStoreSpec.model_validate(s3.store_spec("team-s3"))
    store = ObjectStore(spec, "MODELS", retry_seconds=5)
    started = time.monotonic()
    with pytest.raises(StorageAccessDenied) as denied:
        store.read_bytes(s3.uri(".ready"))
    assert time.monotonic() - started < 5  # refused at once, not retried
    message = str(denied.value)
    assert "'kerasop'" in message and "'team-s3'" in message
    assert wrong not in message and s3.secret_key not in message


def test_a_store_that_is_away_is_retried_until_it_answers(store, prefix, s3):
    store.write_bytes(f"{prefix}/x", b"kept")
    s3.stop()
    try:
        restart = threading.Timer(3, s3.start)
        restart.start()
        store.retry_seconds = 90
        assert store.read_bytes(f"{prefix}/x") == b"kept"
        restart.join()
    finally:
        if s3.proc is None:
            s3.start()


def test_a_store_away_for_longer_than_the_retries_fails_as_unreachable(store, prefix, s3):
    s3.stop()
    try:
        store.retry_seconds = 2
        with pytest.raises(StoreUnreachable, match="did not answer"):
            store.read_bytes(f"{prefix}/x")
    finally:
        s3.start()
