"""Checkpoints of one job (``<store>/<model>/.checkpoints/<job-id>/``): written atomically,
and what a restarted job resumes from. Most are saved at an epoch's end; a trainer stopped by
SIGTERM (a preemption, a suspend, a drained node) saves where it stands, between two batches. With a model store in a bucket the folder
is local scratch and every save is copied to the bucket (``state.json`` last), where a job
restarted on any node finds it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from kerasop.objstore import ObjectStore
from kerasop.store import fsync_file, write_json_atomic
from kerasop_trainer.distributed import allgather_ints, join_collective_save
from kerasop_trainer.errors import note

CHECKPOINT_STATE = "state.json"


class Checkpoints:
    """Checkpoints of one job: ``epoch-NNNNN.keras`` (``epoch-NNNNN-step-NNNNNN.keras`` when
    saved ``step`` batches into the next epoch) + ``state.json``.

    Each file is written under a temporary name and renamed into place, and
    ``state.json`` (which names the file to resume from) is replaced only after
    its file exists, so a kill at any moment leaves a usable checkpoint.
    Only the chief writes; other workers still run ``model.save`` into a
    temporary folder because, under a multi-process distribution, reading the
    variables is a collective operation every process must join.

    ``interval_s``: :meth:`due` once that many seconds have passed since the last save
    (or since this object was made): a save (``model.save`` + fsync) per short epoch
    costs a few percent of the training time.

    ``remote``: (store, uri) of the checkpoint folder in a bucket, mirrored by every save and
    read back when this disk has no checkpoint.
    """

    def __init__(
        self,
        directory: Path,
        chief: bool = True,
        interval_s: float = 0,
        workers: int = 1,
        remote: tuple[ObjectStore, str] | None = None,
    ) -> None:
        self.dir = directory
        self.chief = chief
        self.interval_s = interval_s
        self.workers = workers
        self.remote = remote
        self.saved_epoch: int | None = None  # saved (or marked) by this process
        self._saved_at = time.monotonic()
        self._pulled = False

    def due(self) -> bool:
        """Whether to save the epoch that just ended. With several workers worker 0's
        clock decides for all of them: they must join the same saves."""
        due = time.monotonic() - self._saved_at >= self.interval_s
        if self.workers > 1:
            due = bool(allgather_ints([int(due)])[0][0])
        return due

    def _pull(self) -> None:
        """Copy the bucket's checkpoint here, once, when this disk has none."""
        if self.remote is None or self._pulled or (self.dir / CHECKPOINT_STATE).exists():
            return
        self._pulled = True
        store, uri = self.remote
        if not store.exists(f"{uri}/{CHECKPOINT_STATE}"):
            return
        state = json.loads(store.read_bytes(f"{uri}/{CHECKPOINT_STATE}"))
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}.keras"
        try:
            store.download(f"{uri}/{state['file']}", tmp)
            os.replace(tmp, self.dir / state["file"])
        finally:
            tmp.unlink(missing_ok=True)
        write_json_atomic(self.dir / CHECKPOINT_STATE, state)

    def _push(self, name: str | None) -> None:
        """Mirror the checkpoint file ``name`` (None: only the state) and then the state."""
        if self.remote is None:
            return
        store, uri = self.remote
        if name is not None:
            store.upload(self.dir / name, f"{uri}/{name}")
        store.upload(self.dir / CHECKPOINT_STATE, f"{uri}/{CHECKPOINT_STATE}")
        if name is not None:
            for old in store.names(uri):
                if old.startswith("epoch-") and old != name:
                    store.delete(f"{uri}/{old}")

    def latest(self) -> dict[str, Any] | None:
        self._pull()
        state_file = self.dir / CHECKPOINT_STATE
        try:
            state = json.loads(state_file.read_text())
            path = self.dir / state["file"]
            epoch = int(state["epoch"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError) as exc:
            note(f"ignoring unreadable checkpoint state {state_file}: {exc}")
            return None
        if not path.is_file():
            note(f"checkpoint {path} named by {state_file} is missing; starting over")
            return None
        return {
            "epoch": epoch,
            "step": int(state.get("step", 0)),
            "path": path,
            "finished": bool(state.get("finished", False)),
        }

    def agreed_latest(self) -> dict[str, Any] | None:
        """:meth:`latest`, when every worker found the same one; else None (all start over)."""
        latest = self.latest()
        if self.workers > 1:
            found = (
                [latest["epoch"], latest["step"], int(latest["finished"])] if latest else [0] * 3
            )
            everyone = allgather_ints(found)
            if any(row != everyone[0] for row in everyone):
                note(f"workers found different checkpoints {everyone}; starting from epoch 0")
                return None
        return latest

    def save(self, model: Any, epoch: int, finished: bool = False, step: int = 0) -> None:
        """Save ``model`` after ``epoch`` epochs and ``step`` batches of the next one."""
        self.saved_epoch = epoch if not step else None
        if not self.chief:
            join_collective_save(model)
            self._saved_at = time.monotonic()
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:05d}-step-{step:06d}.keras" if step else f"epoch-{epoch:05d}.keras"
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}.keras"
        try:
            model.save(tmp)
            fsync_file(tmp)
            os.replace(tmp, self.dir / name)
        finally:
            tmp.unlink(missing_ok=True)
        write_json_atomic(
            self.dir / CHECKPOINT_STATE,
            {"epoch": epoch, "step": step, "file": name, "finished": finished},
        )
        for old in self.dir.iterdir():
            if old.name != name and old.name.startswith(("epoch-", ".tmp-")):
                old.unlink(missing_ok=True)
        self._push(name)
        self._saved_at = time.monotonic()

    def mark_finished(self, epoch: int) -> None:
        """Record that training ended with the checkpoint of ``epoch`` (saved by :meth:`save`)."""
        latest = self.latest() if self.chief else None
        if latest is None or latest["epoch"] != epoch:
            return
        write_json_atomic(
            self.dir / CHECKPOINT_STATE,
            {"epoch": epoch, "file": latest["path"].name, "finished": True},
        )
        self._push(None)

    def clear(self) -> None:
        if not self.chief:
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.dir.parent.rmdir()  # .checkpoints/, when no other job has one
        if self.remote is not None:
            store, uri = self.remote
            store.delete_prefix(uri)
