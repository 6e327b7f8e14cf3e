"""Server binaries the component tests build from Go modules with a ``cluster/`` script (cached
under ``${KERASOP_CACHE:-~/.cache/kerasop}/tools/bin``; ``make tools`` builds them), and what
the tests' servers of them share."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def built_binary(script: str, name: str) -> Path:
    """``name`` in the bin directory ``cluster/<script>`` prints on its last line (built now
    if not cached yet)."""
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/local/go/bin"}
    proc = subprocess.run(
        ["bash", str(CLUSTER / script)], stdout=subprocess.PIPE, text=True, env=env, check=False
    )
    assert proc.returncode == 0, f"cluster/{script} failed (its log is above)"
    binary = Path(proc.stdout.strip().splitlines()[-1]) / name
    assert binary.is_file(), binary
    return binary


class ServerProcess:
    """A server the tests run as a subprocess (``proc``) writing to ``log``."""

    proc: subprocess.Popen[bytes] | None
    log: Path

    def spawn(self, cmd: list[str], cwd: Path) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)

    def wait_ready(
        self, name: str, ready: Callable[[], None], timeout: float, interval: float
    ) -> None:
        """Until ``ready()`` returns without raising; fails at once if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(Exception):
                ready()
                return
            time.sleep(interval)
        raise RuntimeError(f"{name} did not answer within {timeout}s: {self.tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
