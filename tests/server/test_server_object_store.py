"""The server with its model store in a bucket of a real S3 server (SeaweedFS,
tests/support/s3.py): it mirrors the latest version onto local disk, hot-swaps to a new one,
refuses a corrupted one (logged, never served), keeps serving while the store is away or
refuses its credentials (and says so on /metrics, where the operator reads it), and a
restarted server on the same node-local cache serves without downloading."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import httpx
import pytest
from serverkit import (
    DENSE,
    FEATURES,
    dense_metadata,
    dense_model,
    rows,
    running_server,
    write_version,
)

from kerasop.objstore import ObjectModelStore, ObjectStore
from kerasop.server_metrics import StoreError, store_error
from kerasop.spec import ObjectStoreSpec
from kerasop.store import ModelStore
from kerasop_server.mirror import mirror_root
from tests.support.waiting import wait_for

pytestmark = pytest.mark.component

X = rows(1, seed=7)


@pytest.fixture
def bucket(s3, monkeypatch) -> tuple[str, ObjectStoreSpec, ObjectModelStore]:
    for k, v in s3.env("MODELS").items():
        monkeypatch.setenv(k, v)
    uri = s3.uri(f"srv-{uuid.uuid4().hex[:8]}/models")
    options = ObjectStoreSpec.model_validate(s3.store_spec("models-creds"))
    return uri, options, ObjectModelStore(uri, ObjectStore(options, "MODELS"))


def _publish(models: ObjectModelStore, scratch: Path, bias: float) -> int:
    """A dense model version written locally as the trainer does, then published."""
    local = scratch / uuid.uuid4().hex
    version = write_version(local, DENSE, dense_model(bias=bias), dense_metadata())
    return models.publish(DENSE, ModelStore(local).version_dir(DENSE, version))


def _publish_corrupted(s3, options, uri: str, scratch: Path, version: int) -> None:
    """Version ``version`` whose model.keras differs from its manifest. Published elsewhere,
    then copied in with the manifest last, so that no server sees it before the damage."""
    staging = ObjectModelStore(f"{uri}-staging", ObjectStore(options, "MODELS"))
    first = _publish(staging, scratch, 5.0)
    fs = s3.filesystem()
    source, target = f"{uri}-staging/{DENSE}/{first}", f"{uri}/{DENSE}/{version}"
    files = [f["path"] for f in staging.manifest(DENSE, first)["files"]]
    for path in files:
        fs.copy(f"{source}/{path}", f"{target}/{path}")
    fs.pipe_file(f"{target}/model.keras", b"not the model")
    fs.copy(f"{source}/manifest.json", f"{target}/manifest.json")


def _served_version(url: str) -> int:
    body = {
        "inputs": [
            {"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": X[0].tolist()}
        ]
    }
    r = httpx.post(f"{url}/v2/models/{DENSE}/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return int(r.json()["model_version"])


def test_loads_hot_swaps_refuses_corruption_and_outlives_the_store(s3, bucket, tmp_path, caplog):
    uri, options, models = bucket
    scratch = tmp_path / "trainer"
    assert _publish(models, scratch, 0.0) == 1
    cache = tmp_path / "node-cache"
    settings = {"store_uri": uri, "store_options": options, "poll_seconds": 0.5}
    caplog.set_level(logging.INFO, logger="kerasop_server")

    with running_server(mirror_root(cache, uri), DENSE, **settings) as server:
        assert _served_version(server.url) == 1
        assert _publish(models, scratch, 3.0) == 2
        wait_for("version 2 served", lambda: _served_version(server.url) == 2, timeout=120)

        # version 3 is corrupted in the bucket: refused, logged, version 2 keeps serving
        _publish_corrupted(s3, options, uri, scratch, version=3)
        wait_for("version 3 refused", lambda: "refusing version 3" in caplog.text, timeout=60)
        assert not (mirror_root(cache, uri) / DENSE / "3").exists()
        assert _served_version(server.url) == 2

        # the store goes away: what is loaded keeps serving
        s3.stop()
        try:
            for _ in range(5):
                assert _served_version(server.url) == 2
            wait_for(
                "the outage logged", lambda: "serving what is loaded" in caplog.text, timeout=60
            )
        finally:
            s3.start()
    assert s3.secret_key not in caplog.text  # logged errors name the store, never a key
    # nothing partial was left in the mirror
    assert sorted(p.name for p in (mirror_root(cache, uri) / DENSE).iterdir()) == ["1", "2"]

    # a server restarted on the same node-local cache serves at once, store down or not
    s3.stop()
    try:
        with running_server(mirror_root(cache, uri), DENSE, version=2, **settings) as again:
            assert _served_version(again.url) == 2
    finally:
        s3.start()


def _store_error(url: str) -> StoreError | None:
    """What the operator reads of the server's model store (kerasop/server_metrics.py)."""
    return store_error(httpx.get(f"{url}/metrics", timeout=30).text)


def test_an_unreachable_store_and_refused_credentials_are_reported_while_serving(
    s3, bucket, tmp_path, caplog, monkeypatch
):
    uri, options, models = bucket
    assert _publish(models, tmp_path / "trainer", 0.0) == 1
    cache = tmp_path / "node-cache"
    settings = {"store_uri": uri, "store_options": options, "poll_seconds": 0.5}
    caplog.set_level(logging.INFO, logger="kerasop_server")

    with running_server(mirror_root(cache, uri), DENSE, **settings) as server:
        assert _served_version(server.url) == 1 and _store_error(server.url) is None
        s3.stop()
        try:
            outage = wait_for("the outage reported", lambda: _store_error(server.url), timeout=90)
            assert outage.reason == "StoreUnreachable" and uri in outage.message
            assert _served_version(server.url) == 1
        finally:
            s3.start()
        wait_for("the store answers again", lambda: _store_error(server.url) is None, timeout=90)

    # The Secret's key no longer matches the store's (rotated there, not in the pod): the
    # version on the node-local cache serves, and the refusal is reported, never the key.
    wrong = "not-" + s3.secret_key
    for k, v in s3.env("MODELS", secret_key=wrong).items():
        monkeypatch.setenv(k, v)
    with running_server(mirror_root(cache, uri), DENSE, **settings) as denied:
        refusal = wait_for("the refusal reported", lambda: _store_error(denied.url), timeout=90)
        assert refusal.reason == "StorageAccessDenied"
        assert "bucket 'kerasop'" in refusal.message and "Secret 'models-creds'" in refusal.message
        for _ in range(3):
            assert _served_version(denied.url) == 1
        exported = httpx.get(f"{denied.url}/metrics", timeout=30).text
    for output in (caplog.text, exported):
        assert s3.secret_key not in output and wrong not in output


def test_a_shared_cache_deletes_only_what_no_server_wanted_for_a_while(bucket, tmp_path):
    """Two servers on one node mirror the same bucket into the node-local cache: one pinned to
    version 1, one following the latest. Each poll marks what its server wants; a version (or
    a killed download's leftovers) goes once no server marked it for ``unused_seconds``, and
    nothing goes while the store does not answer."""
    import os
    import time

    from kerasop_server.metrics import Metrics
    from kerasop_server.mirror import BucketMirror

    uri, options, models = bucket
    for bias in (0.0, 3.0):
        _publish(models, tmp_path / "trainer", bias)
    root = mirror_root(tmp_path / "node-cache", uri)
    pinned, latest = (
        BucketMirror(uri, options, root, DENSE, Metrics(DENSE), unused_seconds=60) for _ in range(2)
    )
    folder = root / DENSE

    def age(*names: str) -> None:
        old = time.time() - 120
        for name in names:
            os.utime(folder / name, (old, old))

    def here() -> list[str]:
        return sorted(p.name for p in folder.iterdir())

    assert pinned.sync([1]) == [1] and latest.sync([None]) == [2]
    stale, fresh = folder / ".partial-2-killed", folder / ".partial-3-downloading"
    (stale / "variables").mkdir(parents=True)
    fresh.mkdir()
    age("1", stale.name)
    pinned.sync([1])  # the pinned server still wants 1: marked again
    assert latest.sync([None]) == [2]
    assert here() == [".partial-3-downloading", "1", "2"]  # only the old download went

    age("1", "2")  # the pinned server is gone for a while
    # a server whose store does not answer (nothing listens there) deletes nothing
    away = options.model_copy(update={"endpoint": "http://127.0.0.1:9"})
    cut_off = BucketMirror(uri, away, root, DENSE, Metrics(DENSE), unused_seconds=60)
    assert cut_off.sync([None]) == [] and cut_off.last_error is not None
    assert here() == [".partial-3-downloading", "1", "2"]
    assert latest.sync([None]) == [2]
    assert here() == [".partial-3-downloading", "2"]
    assert pinned.sync([1]) == [1]  # a server that wants 1 again downloads it again
    assert here() == [".partial-3-downloading", "1", "2"]
