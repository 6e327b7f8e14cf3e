"""``kerasop-train``: the trainer's command line (see docs/CONTRACTS.md).

    kerasop-train --spec FILE --data-root DIR --store-root DIR --job-id ID
                  [--termination-log PATH]

Prints JSON event lines on stdout (``kerasop.events``), writes the final event to
the termination log, and exits with ``kerasop.events.EXIT_*``. Keras is not imported
until the spec has been read, so ``KERAS_BACKEND`` can follow ``spec.training.backend``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from kerasop import contracts, events
from kerasop.contracts import TERMINATION_LOG
from kerasop.events import (
    EXIT_BAD_SPEC,
    EXIT_INTERNAL,
    EXIT_OK,
    TERMINATION_MESSAGE_LIMIT,
)
from kerasop.objstore import ObjectStoreError
from kerasop.spec import KerasTrainingJob, SpecError, load_documents
from kerasop_trainer.errors import TrainerError, store_error
from kerasop_trainer.termination import Terminated, on_sigterm
from kerasop_trainer.training_run import print_event

EXIT_TERMINATED = 128 + signal.SIGTERM  # the shell's code for "killed by SIGTERM"


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="kerasop-train",
        description="Train one KerasTrainingJob and publish the model to the model store.",
    )
    p.add_argument(
        "--spec",
        help="YAML/JSON file with a KerasTrainingJob (env KERASOP_SPEC "
        "holds the document as JSON instead)",
    )
    p.add_argument(
        "--data-root",
        default=env(contracts.ENV_DATA_ROOT, contracts.DATA_ROOT),
        help=f"folder the spec's data paths are relative to (default {contracts.DATA_ROOT})",
    )
    p.add_argument(
        "--store-root",
        default=env(contracts.ENV_STORE_ROOT, contracts.STORE_ROOT),
        help=f"model store root (default {contracts.STORE_ROOT})",
    )
    p.add_argument(
        "--job-id",
        default=env(contracts.ENV_JOB_ID),
        help="stable job identity; a rerun with the same id resumes",
    )
    p.add_argument(
        "--termination-log",
        default=env(contracts.ENV_TERMINATION_LOG),
        help=f"file for the final event (default {TERMINATION_LOG} if it exists)",
    )
    return p


def load_job(spec_file: str | None) -> KerasTrainingJob:
    """The job from ``--spec`` or ``$KERASOP_SPEC``; TrainerError(EXIT_BAD_SPEC) if invalid."""
    if spec_file:
        try:
            text = Path(spec_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise TrainerError(f"cannot read spec file {spec_file}: {exc}", EXIT_BAD_SPEC) from None
        source = spec_file
    elif os.environ.get(contracts.ENV_SPEC):
        text = os.environ[contracts.ENV_SPEC]
        source = f"${contracts.ENV_SPEC}"
    else:
        raise TrainerError("no spec: pass --spec FILE or set KERASOP_SPEC", EXIT_BAD_SPEC)
    try:
        docs = load_documents(text)
    except SpecError as exc:
        raise TrainerError(f"{source}: {exc}", EXIT_BAD_SPEC) from None
    except Exception as exc:
        raise TrainerError(f"{source} is not valid YAML/JSON: {exc}", EXIT_BAD_SPEC) from None
    jobs = [d for d in docs if isinstance(d, KerasTrainingJob)]
    if not jobs:
        raise TrainerError(f"{source} holds no KerasTrainingJob", EXIT_BAD_SPEC)
    if len(jobs) > 1:
        raise TrainerError(
            f"{source} holds {len(jobs)} KerasTrainingJobs; the trainer takes one", EXIT_BAD_SPEC
        )
    return jobs[0]


def termination_message(event: dict[str, Any], limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """``event`` as one JSON line of at most ``limit`` bytes (the message is shortened first)."""
    event = dict(event)
    text = json.dumps(event, separators=(",", ":"), default=float)
    if len(text.encode()) <= limit:
        return text
    message = str(event.get("message", ""))
    while message and len(text.encode()) > limit:
        over = len(text.encode()) - limit
        message = message[: max(0, len(message) - over - 3)]
        event["message"] = message + "..."
        text = json.dumps(event, separators=(",", ":"), default=float)
    if len(text.encode()) > limit:
        text = text.encode()[:limit].decode("utf-8", errors="ignore")
    return text


def write_termination_log(path: str | None, event: dict[str, Any]) -> None:
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(termination_message(event))
    except OSError as exc:
        print(f"kerasop-train: cannot write termination log {path}: {exc}", file=sys.stderr)


def _termination_log_path(arg: str | None) -> str | None:
    if arg:
        return arg
    if os.path.exists(TERMINATION_LOG) and os.access(TERMINATION_LOG, os.W_OK):
        return TERMINATION_LOG
    return None


def run_cli(argv: list[str] | None = None) -> int:
    """Run the command; return the exit code (``main`` exits with it)."""
    args = _parser().parse_args(argv)
    termination_log = _termination_log_path(args.termination_log)
    previous = None
    if threading.current_thread() is threading.main_thread():
        # Kubernetes sends SIGTERM first: raise it as an exception so the model
        # store's staging directory is removed on the way out (termination.py).
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return _run(args, termination_log)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, termination_log: str | None) -> int:
    try:
        job = load_job(args.spec)
        if not args.job_id:
            raise TrainerError("no job id: pass --job-id or set KERASOP_JOB_ID", EXIT_BAD_SPEC)
        if job.spec.script is not None:
            from kerasop_trainer.script import run_script

            done = run_script(
                job, Path(args.data_root), Path(args.store_root), args.job_id, emit=print_event
            )
        elif job.spec.tuning is not None:
            from kerasop_trainer import tuning

            done = tuning.run(
                job, Path(args.data_root), Path(args.store_root), args.job_id, emit=print_event
            )
        else:
            from kerasop_trainer import train

            done = train.run(
                job, Path(args.data_root), Path(args.store_root), args.job_id, emit=print_event
            )
        write_termination_log(termination_log, done)
        return EXIT_OK
    except TrainerError as exc:
        return _fail(termination_log, exc.exit_code, exc.reason, exc.message)
    except ObjectStoreError as exc:  # publishing or checkpointing to a bucket
        err = store_error(exc)
        return _fail(termination_log, err.exit_code, err.reason, err.message)
    except Terminated as stopped:
        resumes = f"from {stopped}" if str(stopped) else "from the last checkpoint"
        return _fail(
            termination_log,
            EXIT_TERMINATED,
            "Terminated",
            f"stopped by SIGTERM; a rerun with the same job id resumes {resumes}",
        )
    except KeyboardInterrupt:
        return _fail(termination_log, EXIT_INTERNAL, "Interrupted", "interrupted")
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return _fail(
            termination_log,
            EXIT_INTERNAL,
            events.FAILURE_REASONS[EXIT_INTERNAL],
            f"{type(exc).__name__}: {exc}",
        )


def _fail(termination_log: str | None, code: int, reason: str, message: str) -> int:
    event = {"kerasop": "failed", "reason": reason, "message": message, "exitCode": code}
    print_event(termination_message(event, limit=64 * 1024))
    write_termination_log(termination_log, event)
    print(f"kerasop-train: {reason}: {message}", file=sys.stderr, flush=True)
    return code


def freeze_for_exit() -> None:
    """Spare the interpreter's garbage collections at exit; call it just before a
    successful run exits.

    While Python tears its modules down it collects garbage several times, and with
    TensorFlow and Keras loaded each pass walks millions of objects (seconds per exit).
    Frozen objects are skipped; the operating system takes the memory back. Objects are still freed by
    reference counting (files close) and atexit handlers still run. Only after success:
    a run stopped mid-epoch (SIGTERM) exits the ordinary way.
    """
    gc.freeze()


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``kerasop-train``."""
    code = run_cli(argv)
    if code == EXIT_OK:
        freeze_for_exit()
    elif code == EXIT_TERMINATED:
        # Stopped mid-epoch: TensorFlow's input threads may still be running, and tearing
        # the interpreter down under them can abort the process ("free(): invalid next
        # size"). The staging folder is already removed and the failed event written;
        # leave without the teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
