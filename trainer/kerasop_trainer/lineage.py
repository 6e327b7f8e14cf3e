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

from kerasop.spec import KerasTrainingJob, spec_hash

CHUNK = 1 << 20


def data_fingerprint(data_root: Path, paths: list[str]) -> str:
    """sha256 over every file under ``paths`` (files or folders, relative to ``data_root``)."""
    digest = hashlib.sha256()
    for rel in paths:
        top = data_root / rel
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for file in files:
            digest.update(str(file.relative_to(data_root)).encode() + b"\0")
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
        "dataFingerprint": data_fingerprint(data_root, paths),
    }
