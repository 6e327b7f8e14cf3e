"""kerasop.objstore on gs:// against a real GCS server (fake-gcs-server, tests/support/gcs.py):
the ifGenerationMatch=0 precondition the version claims rest on, versions with manifests (a
file big enough for a resumable upload among them), concurrent publishers, downloads and the
server's mirror refusing a corrupted version, data staging, a key file that does not load, and
what gcsfs makes of GCS refusing the credentials."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
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
)
from kerasop.spec import ObjectStoreSpec
from kerasop_server.metrics import Metrics
from kerasop_server.mirror import BucketMirror

pytestmark = pytest.mark.component

BIG = 6 << 20  # gcsfs uploads a file of 5 MiB or more in a resumable session


@pytest.fixture
def prefix(gcs) -> str:
    return gcs.uri(f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def spec(gcs) -> ObjectStoreSpec:
    return ObjectStoreSpec.model_validate(gcs.store_spec())


def _models(prefix: str, spec: ObjectStoreSpec) -> ObjectModelStore:
    """A publisher or reader of its own (a trainer pod, a server pod)."""
    return ObjectModelStore.open(prefix, spec, retry_seconds=5)


def _version_folder(root: Path, text: str, big: bool = False) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.keras").write_bytes(text.encode() * (BIG // len(text) if big else 1000))
    (root / "metadata.json").write_text(json.dumps({"name": text}))
    (root / "sub" / "part.bin").write_bytes(b"\0\1" * 5000)
    return root


def _upload(gcs, key: str, body: bytes, **params: str) -> int:
    """One media upload through the JSON API, as gcsfs makes it; the HTTP status."""
    query = urllib.parse.urlencode({"uploadType": "media", "name": key, **params})
    url = f"{gcs.endpoint}/upload/storage/v1/b/{gcs.bucket}/o?{query}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, method="POST")) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_a_second_upload_with_if_generation_match_0_is_refused(gcs):
    """What "claim version N" rests on: the server honours ifGenerationMatch=0."""
    key = f"claims/{uuid.uuid4().hex}"
    assert _upload(gcs, key, b"first", ifGenerationMatch="0") == 200
    assert _upload(gcs, key, b"second", ifGenerationMatch="0") == 412
    assert gcs.filesystem().cat_file(f"{gcs.bucket}/{key}") == b"first"


def test_publish_lists_downloads_and_verifies_versions(spec, prefix, tmp_path):
    models = _models(prefix, spec)
    assert models.versions("m") == [] and models.latest("m") is None
    one = _version_folder(tmp_path / "v", "one", big=True)
    assert models.publish("m", one) == 1
    assert models.publish("m", _version_folder(tmp_path / "w", "two")) == 2

    reader = _models(prefix, spec)
    assert reader.versions("m") == [1, 2] and reader.latest("m") == 2
    manifest = reader.manifest("m", 1)
    assert sorted(f["path"] for f in manifest["files"]) == [
        "metadata.json",
        "model.keras",
        "sub/part.bin",
    ]
    got = reader.download("m", 1, tmp_path / "dl" / "1")
    assert (got / "model.keras").stat().st_size >= BIG
    assert (got / "model.keras").read_bytes() == (one / "model.keras").read_bytes()
    assert (got / "sub" / "part.bin").read_bytes() == b"\0\1" * 5000
    two = reader.download("m", 2, tmp_path / "dl" / "2")
    assert json.loads((two / "metadata.json").read_text()) == {"name": "two"}
    assert not [p for p in (tmp_path / "dl").iterdir() if p.name.startswith(".")]


def test_a_version_without_its_manifest_does_not_exist(spec, prefix, tmp_path, gcs):
    """Files uploaded, manifest not (a trainer killed mid-upload): not listed, and the next
    publish takes the next number rather than writing over it."""
    models = _models(prefix, spec)
    fs = gcs.filesystem()
    fs.pipe_file(f"{prefix}/m/.claims/1", b"")
    fs.pipe_file(f"{prefix}/m/1/model.keras", b"half")
    assert models.versions("m") == []
    assert models.publish("m", _version_folder(tmp_path / "v", "x")) == 2
    assert models.versions("m") == [2]


def test_concurrent_publishers_never_get_the_same_version(spec, prefix, tmp_path):
    """Four jobs, each with its own client, publish at the same moment: every one lists no
    version and claims 1 first, so all but one are refused and move on."""
    folders = [_version_folder(tmp_path / str(i), f"m{i}") for i in range(4)]
    start = threading.Barrier(len(folders))

    def publish(folder: Path) -> int:
        models = _models(prefix, spec)
        start.wait()
        return models.publish("m", folder)

    with ThreadPoolExecutor(len(folders)) as pool:
        versions = list(pool.map(publish, folders))
    assert sorted(versions) == [1, 2, 3, 4]
    reader = _models(prefix, spec)
    for folder, version in zip(folders, versions, strict=True):  # each holds its own files
        name = json.loads(reader.store.read_bytes(f"{prefix}/m/{version}/metadata.json"))
        assert name == {"name": f"m{folder.name}"}


def test_the_mirror_refuses_a_corrupted_version_and_keeps_the_good_one(
    spec, prefix, tmp_path, gcs, caplog
):
    models = _models(prefix, spec)
    models.publish("m", _version_folder(tmp_path / "v", "ok"))
    models.publish("m", _version_folder(tmp_path / "w", "bad"))
    gcs.filesystem().pipe_file(f"{prefix}/m/2/model.keras", b"tampered")
    caplog.set_level(logging.INFO, logger="kerasop_server")

    mirror = BucketMirror(prefix, spec, tmp_path / "mirror", "m", Metrics("m"))
    assert mirror.sync([None]) == []  # the latest, 2, is refused
    assert "refusing version 2 of m" in caplog.text and "m/2/model.keras" in caplog.text
    assert mirror.sync([1]) == [1]
    assert sorted(p.name for p in (tmp_path / "mirror" / "m").iterdir()) == ["1"]
    assert json.loads((tmp_path / "mirror" / "m" / "1" / "metadata.json").read_text()) == {
        "name": "ok"
    }
    with pytest.raises(ChecksumMismatch, match=r"m/2/model.keras"):
        models.download("m", 2, tmp_path / "dl" / "2")
    assert list((tmp_path / "dl").iterdir()) == []


def test_stage_copies_a_file_and_a_prefix_and_names_what_is_missing(gcs, spec, prefix, tmp_path):
    fs = gcs.filesystem()
    fs.pipe_file(f"{prefix}/data/train.csv", b"a,label\n1,0\n")
    fs.pipe_file(f"{prefix}/imgs/cat/1.png", b"png1")
    fs.pipe_file(f"{prefix}/imgs/dog/2.png", b"png2")
    store = ObjectStore(spec, "DATA", scheme="gs", retry_seconds=5)
    staged = store.stage(f"{prefix}/data/train.csv", tmp_path / "cache")
    assert staged.read_bytes() == b"a,label\n1,0\n" and staged.name == "train.csv"
    folder = store.stage(f"{prefix}/imgs/", tmp_path / "cache")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == [
        "cat/1.png",
        "dog/2.png",
    ]
    missing = f"{prefix}/data/nope.csv"
    with pytest.raises(DataNotFound) as not_found:
        store.stage(missing, tmp_path / "cache")
    assert str(not_found.value) == f"{missing}: no such object or prefix"
    with pytest.raises(DataNotFound, match=missing):
        store.read_bytes(missing)
    with pytest.raises(DataNotFound):
        store.stage(f"{prefix}/empty/", tmp_path / "cache")


def test_a_key_file_that_does_not_load_names_the_bucket_and_the_secret_never_the_key(
    gcs, prefix, tmp_path, monkeypatch
):
    secret = "not-a-key-" + uuid.uuid4().hex
    key = {
        "type": "service_account",
        "client_email": "trainer@project.iam.gserviceaccount.com",
        "private_key": f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    (tmp_path / "key.json").write_text(json.dumps(key))
    monkeypatch.setenv("KERASOP_MODELS_GCS_KEY_FILE", str(tmp_path / "key.json"))
    spec = ObjectStoreSpec.model_validate(gcs.store_spec("team-gcs"))
    store = ObjectStore(spec, "MODELS", scheme="gs", retry_seconds=5)
    with pytest.raises(StorageAccessDenied) as denied:
        store.read_bytes(f"{prefix}/x")
    message = str(denied.value)
    assert message == "access to bucket 'kerasop' denied with the credentials of Secret 'team-gcs'"
    assert secret not in message


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_by_gcs_names_the_bucket_and_the_secret(status):
    """A token GCS refuses (401, once gcsfs' own retries are spent) or a key without the
    permission (403). fake-gcs-server accepts any credentials, so the errors are the ones gcsfs
    makes of such responses (gcsfs.retry.validate_response)."""
    from gcsfs.retry import validate_response

    spec = ObjectStoreSpec.model_validate({"gcsSecretName": "team-gcs"})
    store = ObjectStore(spec, "MODELS", scheme="gs", retry_seconds=5)
    body = json.dumps({"error": {"code": status, "message": "Invalid Credentials"}}).encode()
    started = time.monotonic()
    with pytest.raises(StorageAccessDenied) as denied:
        store.call("gs://kerasop/m/1", lambda: validate_response(status, body, "b/kerasop/o/m"))
    assert time.monotonic() - started < 1  # refused at once, not retried
    assert str(denied.value) == (
        "access to bucket 'kerasop' denied with the credentials of Secret 'team-gcs'"
    )
