"""A model store in a bucket, mirrored onto local disk for the manager (docs/model-store.md,
"Object storage").

The manager loads versions from a folder (:class:`kerasop.store.ModelStore`). With
``--store-uri`` that folder is a local mirror (an emptyDir, or a node-local cache that a pod
restarted on the same node finds full): :class:`BucketMirror` polls the bucket and downloads
the versions the server should serve. A version appears in the folder only after every file
matched the manifest's size and SHA-256 (:meth:`kerasop.objstore.ObjectModelStore.download`),
so the manager never sees a partial or corrupted one; a corrupted version is logged and
skipped, and a store that does not answer (or refuses the credentials) leaves what is loaded
serving. The last poll's store error is exported on ``/metrics`` (``Metrics.set_store_error``),
where the operator reads it into the service's ``ModelStoreReachable`` condition.

A node-local cache is shared by every server pod on the node that mirrors the same URI, and
outlives them: each successful poll marks the versions its pod wants (their folder's mtime)
and deletes the versions, and the downloads a killed pod left half done, that no pod has
marked for ``unused_seconds``; so the cache holds what the node serves, not every version
it ever served.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from kerasop.objstore import ChecksumMismatch, ObjectModelStore, ObjectStoreError
from kerasop.spec import ObjectStoreSpec

from .metrics import Metrics
from .routing import read_plan

log = logging.getLogger(__name__)

# A mirror's calls give up on a silent store after this long (then the next poll tries again).
RETRY_SECONDS = 10.0


def mirror_root(cache: Path, uri: str) -> Path:
    """The folder of ``uri``'s mirror inside a node-local cache shared by stores."""
    return cache / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]


class BucketMirror:
    """Keeps ``root/<name>/<version>/`` holding the versions to serve of ``name``."""

    def __init__(
        self,
        uri: str,
        options: ObjectStoreSpec | None,
        root: Path,
        name: str,
        metrics: Metrics,
        unused_seconds: float = 3600.0,
    ) -> None:
        self.bucket = ObjectModelStore.open(uri, options, retry_seconds=RETRY_SECONDS)
        self.root = root
        self.name = name
        self.metrics = metrics
        self.unused_seconds = unused_seconds
        self.refused: set[int] = set()  # corrupted in the bucket: not downloaded again
        self.last_error: ObjectStoreError | None = None

    def sync(self, wanted: list[int | None]) -> list[int]:
        """Download each wanted version (None: the bucket's latest) not here yet; return the
        versions now here. Never raises for the store: errors are logged (once each) and
        exported on ``/metrics`` until a poll succeeds."""
        here: list[int] = []
        try:
            versions = [self.bucket.latest(self.name) if v is None else v for v in wanted]
            for version in versions:
                if version is not None and self._fetch(version):
                    here.append(version)
            # Only after a poll that answered: while the store is down nothing is marked, and
            # the versions serving now must survive a restart.
            self._evict_unused(here)
            if self.last_error is not None:
                log.info("model store %s answers again", self.bucket.uri)
            self.last_error = None
        except ObjectStoreError as exc:
            if str(exc) != str(self.last_error):
                log.warning("model store %s: %s; serving what is loaded", self.bucket.uri, exc)
            self.last_error = exc
        self.metrics.set_store_error(self.last_error)
        return here

    def _evict_unused(self, here: list[int]) -> None:
        folder = self.root / self.name
        now = time.time()
        for version in here:
            os.utime(folder / str(version), (now, now))
        for entry in folder.iterdir() if folder.is_dir() else ():
            version_dir = entry.name.isdigit() and int(entry.name) not in here
            if not (version_dir or entry.name.startswith(".partial-")):
                continue
            try:
                unused = now - entry.stat().st_mtime
            except FileNotFoundError:
                continue  # another pod's eviction or download got there first
            if unused > self.unused_seconds:
                shutil.rmtree(entry, ignore_errors=True)
                log.info("deleted %s from the cache: no server wanted it for %.0f s", entry, unused)

    def _fetch(self, version: int) -> bool:
        dest = self.root / self.name / str(version)
        if dest.is_dir():
            return True
        if version in self.refused:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.bucket.download(self.name, version, dest)
        except ChecksumMismatch as exc:
            self.refused.add(version)
            log.error("refusing version %d of %s: %s", version, self.name, exc)
            return False
        log.info("downloaded version %d of %s from %s", version, self.name, self.bucket.uri)
        return True


async def mirror_forever(
    mirror: BucketMirror,
    pinned: int | None,
    rollout_file: Path | None,
    poll_seconds: float,
    arrived: Callable[[], None],
) -> None:
    """Sync the versions the server should serve, every ``poll_seconds``: a rollout plan's
    stable and candidate, else the pinned version, else the latest. ``arrived`` is called when
    a version is new here, so the manager loads it now rather than at its next poll."""
    loop = asyncio.get_running_loop()
    here: set[int] = set()
    while True:
        wanted: list[int | None] = [pinned]
        if rollout_file is not None:
            try:
                plan = read_plan(rollout_file)
            except (OSError, ValueError):
                plan = None  # the manager logs it
            if plan is not None:
                wanted = [v for v in (plan.stable, plan.candidate) if v is not None]
        now_here = set(await loop.run_in_executor(None, mirror.sync, wanted))
        if now_here - here:
            arrived()
        here = now_here
        await asyncio.sleep(poll_seconds)
