"""Script mode: run the user's own training script (``spec.script.command``) as a child
process and turn what it does into the built-in trainer's results.

The script talks to the operator through :mod:`kerasop_trainer.api` (its ``start``,
``epoch`` and ``done`` events go to stdout, which is passed through line by line). This
wrapper adds what a script cannot do for itself:

- the environment the API reads (spec, job id, data and store roots, workers), the same
  in a pod and in ``kerasop train``;
- a ``failed`` event with reason ``UserCodeError`` and the tail of the script's stderr
  (its traceback) when it exits non-zero, cannot be started, or exits 0 without
  publishing a version; the script's own ``failed`` event, if it printed one, wins;
- SIGTERM forwarded to the script (the model store's staging folder is removed by the
  script's own ``publish``, which is atomic).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kerasop import contracts, events
from kerasop.events import EXIT_USER_CODE
from kerasop.spec import KerasTrainingJob
from kerasop_trainer.errors import TrainerError

STDERR_TAIL_LINES = 25
STOP_GRACE_S = 20


def script_environment(
    job: KerasTrainingJob,
    data_root: Path,
    store_root: Path,
    job_id: str,
    python_first: bool = False,
) -> dict[str, str]:
    """The environment of the script: this process's, plus what the API reads.

    ``python_first`` puts the folder of the Python running this process first on ``PATH``,
    so ``python``/``python3`` in the command (and in anything the script starts) is the
    interpreter that has kerasop and its dependencies, even from a venv that was not
    activated or a pipx install. In a pod the image's ``PATH`` already says which.
    """
    spec = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    path = os.environ.get("PATH", os.defpath)
    if python_first:
        path = os.pathsep.join([str(Path(sys.executable).parent), path])
    return {
        **os.environ,
        "PATH": path,
        contracts.ENV_SPEC: json.dumps(spec, separators=(",", ":")),
        contracts.ENV_JOB_ID: job_id,
        contracts.ENV_DATA_ROOT: str(data_root.absolute()),
        contracts.ENV_STORE_ROOT: str(store_root.absolute()),
        "PYTHONUNBUFFERED": "1",
    }


def run_script(
    job: KerasTrainingJob,
    data_root: Path,
    store_root: Path,
    job_id: str,
    emit: Callable[[str], None],
    python_first: bool = False,
) -> dict[str, Any]:
    """Run the script to the end; return its ``done`` event or raise ``TrainerError``.

    ``python_first``: see :func:`script_environment` (``kerasop train`` sets it).
    """
    assert job.spec.script is not None
    command = list(job.spec.script.command)
    cwd = data_root if data_root.is_dir() else None
    try:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            cwd=cwd,
            env=script_environment(job, data_root, store_root, job_id, python_first),
        )
    except OSError as exc:
        raise TrainerError(
            f"script command {command[0]!r} cannot be started: {exc}",
            EXIT_USER_CODE,
            reason="UserCodeError",
        ) from None

    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    stderr_thread = threading.Thread(target=_copy_stderr, args=(proc, tail), daemon=True)
    stderr_thread.start()
    last: dict[str, dict[str, Any]] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            event = events.decode(line)
            if event is not None:
                last[event.kerasop] = event.model_dump(mode="json", by_alias=True)
            emit(line)
        code = proc.wait()
    except BaseException:  # SIGTERM (Terminated), Ctrl-C: stop the script too
        _stop(proc)
        raise
    stderr_thread.join(timeout=5)

    if code == 0 and "done" in last:
        return last["done"]
    if "failed" in last:  # the script's own report (e.g. a TrainerError from the API)
        failed = last["failed"]
        raise TrainerError(
            str(failed.get("message") or ""),
            int(failed.get("exitCode") or EXIT_USER_CODE),
            reason=str(failed.get("reason") or "UserCodeError"),
        )
    stderr = "\n".join(tail).strip()
    if code < 0:  # killed (OOM, preemption): not the script's fault, the Job retries it
        name = signal.Signals(-code).name
        raise TrainerError(
            f"the script was killed by {name}; a rerun resumes from its last checkpoint",
            128 - code,
            reason="ScriptKilled",
        )
    if code == 0:
        message = (
            "the script exited without publishing a model version (call "
            "kerasop_trainer.api.publish(model, metrics))"
        )
    else:
        message = f"the script {' '.join(command)[:200]} exited with code {code}"
    if stderr:
        message += f"\n{stderr[-2000:]}"
    raise TrainerError(message, EXIT_USER_CODE, reason="UserCodeError")


def _copy_stderr(proc: subprocess.Popen[str], tail: collections.deque[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        tail.append(line.rstrip("\n"))
    sys.stderr.flush()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
