"""Where a model version came from: recorded in its metadata.json as ``lineage``.

- ``job``: the job's name; ``jobId``: its identity (the operator passes the UID);
- ``specHash``: sha256 of the job spec (canonical JSON), first 16 hex digits;
- ``dataFingerprint``: sha256 over the training (and validation) data files,
  relative path and bytes of each file in path order, so the same data gives
  the same fingerprint wherever the volume is mounted and a changed byte, an
  added or a renamed file gives another.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from kerasop.spec import KerasTrainingJob, ObjectStoreSpec, spec_hash, uri_scheme
from kerasop_trainer.data.sources import data_file

CHUNK = 1 << 20


def data_fingerprint(
    data_root: Path, paths: list[str], store: ObjectStoreSpec | None = None
) -> str:
    """sha256 over every file under ``paths`` (files or folders, relative to ``data_root``;
    a URI's files are named by the URI and their path under it)."""
    digest = hashlib.sha256()
    for rel in paths:
        top = data_file(data_root, rel, store)
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for file in files:
            name = (
                str(file.relative_to(data_root))
                if uri_scheme(rel) is None
                else "/".join([rel.rstrip("/"), *file.relative_to(top).parts])
            )
            digest.update(name.encode() + b"\0")
            with file.open("rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
            digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def lineage(job: KerasTrainingJob, job_id: str, data_root: Path) -> dict[str, str]:
    data = job.spec.data
    paths = [data.path] + ([data.validation_path] if data.validation_path else [])
    return {
        "job": job.metadata.name,
        "jobId": job_id,
        "specHash": spec_hash(job.spec),
        "dataFingerprint": data_fingerprint(data_root, paths, data.store),
    }
