"""``kerasop train -f --processes N`` on a search (``spec.tuning``): keras-tuner's distributed
mode on this machine, as the operator runs it in pods (docs/tuning.md).

One ``kerasop-train`` process per pod of the cluster's search: index 0 the chief (the
oracle and trials of its own, then the publishing of the best trial), 1..N-1 tuner workers
that run trials, with the same environment the operator gives the pods. Every process's event lines go to
``show``; the chief's exit code is the command's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from kerasop.contracts import (
    ENV_KERASTUNER_ORACLE_IP,
    ENV_KERASTUNER_ORACLE_PORT,
    ENV_TUNER_INDEX,
)
from kerasop.spec import KerasTrainingJob

ORACLE_HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ORACLE_HOST, 0))
        port: int = s.getsockname()[1]
        return port


def run_search_processes(
    job: KerasTrainingJob,
    data_dir: Path,
    store: Path,
    job_id: str,
    processes: int,
    show: Callable[[str], None],
) -> int:
    """Run the search as ``processes`` processes (the chief first); the chief's exit code."""
    port = str(free_port())
    lock = threading.Lock()

    def forward(stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with lock:
                show(line.rstrip("\n"))

    with tempfile.TemporaryDirectory(prefix="kerasop-search-") as tmp:
        spec = Path(tmp) / "job.json"
        spec.write_text(json.dumps(job.model_dump(mode="json", by_alias=True, exclude_none=True)))
        procs, readers = [], []
        for index in range(processes):
            env = dict(os.environ)
            env.update(
                {
                    ENV_KERASTUNER_ORACLE_IP: ORACLE_HOST,
                    ENV_KERASTUNER_ORACLE_PORT: port,
                    ENV_TUNER_INDEX: str(index),
                }
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "kerasop_trainer.main", "--spec", str(spec),
                 "--data-root", str(data_dir), "--store-root", str(store), "--job-id", job_id],
                stdout=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            reader = threading.Thread(target=forward, args=(proc.stdout,), daemon=True)
            reader.start()
            procs.append(proc)
            readers.append(reader)
        chief, *tuners = procs
        if chief.wait():  # no oracle any more: the tuners would wait for it forever
            for proc in tuners:
                proc.terminate()
        codes = [chief.returncode] + [proc.wait() for proc in tuners]
        for reader in readers:
            reader.join(timeout=10)
    return codes[0] or next((c for c in codes if c), 0)
