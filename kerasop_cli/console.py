"""Terminal output of the local CLI: quiet TensorFlow start-up, training progress, predictions.

TensorFlow's native libraries log through absl before absl is initialised, so
``TF_CPP_MIN_LOG_LEVEL`` does not reach every start-up line (the oneDNN notice,
"All log messages before absl::InitializeLog() ..."). :func:`quiet_native_logs`
therefore also passes file descriptor 2 through a filter that drops native
INFO/WARNING lines and keeps everything else (errors, tracebacks, our own notes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

# Native (absl/glog) INFO and WARNING lines: "I0000 00:00:1795977543.025552   15790 port.cc:153] ..."
_NATIVE_INFO = re.compile(rb"^[IW]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w./-]+:\d+\] ")
_NOISE = (
    re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    _NATIVE_INFO,
    # The second line of cpu_feature_guard's notice.
    re.compile(rb"^To enable the following instructions: .* rebuild TensorFlow"),
)

QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow C++: errors only
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
}


def is_noise(line: bytes) -> bool:
    return any(p.match(line) for p in _NOISE)


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Silence TensorFlow/absl start-up noise for the duration of the block.

    Call before TensorFlow is imported: the environment is read at import time.
    Child processes inherit both the environment and the filtered stderr.
    """
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("absl", "tensorflow"):  # Python-side loggers
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stderr.flush()
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_filter, args=(read_end, real_stderr), daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes our write end: the pump sees EOF once children exit
        pump.join(timeout=5)
        os.close(real_stderr)


def _filter(read_end: int, out: int) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as src:
        pending = b""
        while chunk := src.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
            if kept:
                os.write(out, kept)
        if pending and not is_noise(pending):
            os.write(out, pending)


class TrainingDisplay:
    """Training progress: a live bar within each epoch on a terminal, lines otherwise.

    :meth:`batch` updates the bar (steps, ETA, live loss); :meth:`line` prints a
    permanent line above it (one per epoch). Off a terminal :attr:`live` is False
    and callers need not report batches at all.
    """

    def __init__(self, stream: TextIO | None = None, force_terminal: bool | None = None) -> None:
        from rich.console import Console

        self.console = Console(
            file=stream or sys.stdout, force_terminal=force_terminal, highlight=False
        )
        self.live = self.console.is_terminal
        self._progress: Any = None
        self._task: Any = None
        self._epoch: int | None = None

    def batch(
        self, epoch: int, epochs: int, step: int, steps: int | None, loss: float | None
    ) -> None:
        if self._progress is None:
            self._start()
        if epoch != self._epoch:
            self._epoch = epoch
            self._progress.reset(self._task, total=steps, epoch=f"{epoch}/{epochs}", loss="")
        shown = f"loss {loss:.4f}" if loss is not None else ""
        self._progress.update(self._task, completed=step, total=steps, loss=shown)
        if not self._progress.live.is_started:
            self._progress.start()  # after the first update: never draws an empty bar

    def line(self, text: str) -> None:
        """``text`` as it is: not wrapped (a search's trial lines are long), and brackets
        (``model.layers[0]``) are not markup."""
        out = self._progress.console if self._progress is not None else self.console
        out.print(text, soft_wrap=True, markup=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _start(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[loss]}"),
            console=self.console,
            transient=True,  # the bar gives way to the epoch's line
        )
        self._task = self._progress.add_task("train", total=None, epoch="", loss="")


def describe_predictions(predictions: list[Any], output: dict[str, Any]) -> list[str]:
    """One readable line per prediction: class name and probability, or the value.

    ``output`` is the model's ``metadata.json`` ``output`` section (kind, classNames).
    """
    kind = output.get("kind")
    names = output.get("classNames") or []
    lines = []
    for row, pred in enumerate(predictions, start=1):
        values = pred if isinstance(pred, list) else [pred]
        if not all(isinstance(v, int | float) for v in values):  # not a flat vector
            lines.append(f"row {row}: {json.dumps(pred)}")
        elif kind == "binary" and len(values) == 1:
            p = float(values[0])
            index = int(p >= 0.5)
            prob = p if index else 1 - p
            lines.append(f"row {row}: {_class_name(names, index)} (probability {prob:.3f})")
        elif kind == "multiclass" and values:
            index = max(range(len(values)), key=lambda i: values[i])
            lines.append(
                f"row {row}: {_class_name(names, index)} (probability {float(values[index]):.3f})"
            )
        else:
            lines.append(f"row {row}: " + ", ".join(f"{float(v):.4g}" for v in values))
    return lines


def _class_name(names: list[Any], index: int) -> str:
    return str(names[index]) if index < len(names) else f"class {index}"
