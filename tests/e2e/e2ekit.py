"""Helpers of the end-to-end tier: kubectl/helm wrappers, bounded waits, diagnostics.

Everything talks to the cluster named by ``KUBECONFIG`` through ``kubectl`` and ``helm``
subprocesses (the same tools a user types), so the suite runs unchanged against this
project's kind cluster (``cluster/kind/up.sh``) and against any other.

Every wait is bounded and, when it runs out, fails with the object's status, the
namespace's recent events and the logs of the pods involved (see :class:`Diagnostics`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.waiting import wait_for  # noqa: F401 - the scenarios' waiting helper

REPO = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("KERASOP_CACHE", Path.home() / ".cache" / "kerasop"))

GROUP = "kerasop.io"
API_VERSION = "kerasop.io/v1alpha1"
JOBS = "kerastrainingjobs.kerasop.io"
SERVICES = "kerasmodelservices.kerasop.io"
CRDS = (JOBS, SERVICES)
LABEL_TRAINING_JOB = "kerasop.io/training-job"
LABEL_MODEL_SERVICE = "kerasop.io/model-service"
LABEL_PART_OF = "app.kubernetes.io/part-of"
GPU = "nvidia.com/gpu"


class E2EError(AssertionError):
    """A failed expectation of the e2e tier (its message carries the diagnostics)."""


# --------------------------------------------------------------------------------------------
# tools


def find_tool(name: str) -> str:
    """kubectl/helm: ``$KUBECTL``/``$HELM``, else the project's static binaries, else PATH.

    The project's binaries come from ``cluster/get-tools.sh`` (run on demand). A kubectl found
    only on PATH is used as a last resort (some distributions ship a wrapper of another
    version there).
    """
    env = os.environ.get(name.upper())
    if env:
        return env
    cached = CACHE / "tools" / "bin" / name
    if not cached.exists():
        proc = subprocess.run(
            ["bash", str(REPO / "cluster" / "get-tools.sh")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0 and shutil.which(name) is None:
            raise E2EError(
                f"cannot find {name}: cluster/get-tools.sh failed:\n{proc.stderr[-2000:]}"
            )
    if cached.exists():
        return str(cached)
    found = shutil.which(name)
    if found is None:
        raise E2EError(f"{name} not found (set ${name.upper()} or run cluster/get-tools.sh)")
    return found


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        return (
            f"$ {shlex.join(self.args)}\n(exit {self.returncode})\n"
            f"{self.stdout[-3000:]}{self.stderr[-3000:]}"
        )


class Kubectl:
    """``kubectl`` bound to one kubeconfig; every call has a timeout."""

    def __init__(self, kubeconfig: str, binary: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.binary = binary or find_tool("kubectl")

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def run(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> Result:
        argv = [self.binary, *args]
        try:
            proc = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.env(),
            )
        except subprocess.TimeoutExpired as exc:
            res = Result(
                argv, -1, _text(exc.stdout), _text(exc.stderr) + f"\n(timed out after {timeout}s)"
            )
            if check:
                raise E2EError(res.describe()) from None
            return res
        res = Result(argv, proc.returncode, proc.stdout, proc.stderr)
        if check and not res.ok:
            raise E2EError(res.describe())
        return res

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.binary, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )

    # ---- objects --------------------------------------------------------------------------

    def json(self, *args: str, timeout: float = 60) -> Any:
        return json.loads(self.run(*args, "-o", "json", timeout=timeout).stdout)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.run(*args, timeout=60).stdout.strip()
        return json.loads(out) if out else None

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        selector: str | None = None,
        all_namespaces: bool = False,
    ) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"]
        if all_namespaces:
            args.append("-A")
        elif namespace:
            args += ["-n", namespace]
        if selector:
            args += ["-l", selector]
        return self.json(*args).get("items") or []

    def apply(
        self, docs: dict[str, Any] | Iterable[dict[str, Any]], namespace: str | None = None
    ) -> str:
        items = [docs] if isinstance(docs, dict) else list(docs)
        text = yaml.safe_dump_all(items, sort_keys=False)
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        return self.run(*args, input=text).stdout

    def create(self, doc: dict[str, Any], namespace: str | None = None) -> str:
        args = ["create", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        return self.run(*args, input=json.dumps(doc)).stdout

    def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *extra: str,
        wait: bool = False,
        timeout: float = 120,
    ) -> Result:
        args = ["delete", kind, name, "--ignore-not-found", f"--wait={'true' if wait else 'false'}"]
        if namespace:
            args += ["-n", namespace]
        return self.run(*args, *extra, timeout=timeout)

    def logs(
        self,
        pod: str,
        namespace: str,
        container: str | None = None,
        tail: int | None = None,
        previous: bool = False,
    ) -> str:
        args = ["logs", pod, "-n", namespace]
        if container:
            args += ["-c", container]
        if tail is not None:
            args.append(f"--tail={tail}")
        if previous:
            args.append("--previous")
        res = self.run(*args, check=False, timeout=60)
        return res.stdout if res.ok else f"(no logs: {res.stderr.strip()[:300]})"

    def exec(
        self, pod: str, namespace: str, *command: str, timeout: float = 300, check: bool = True
    ) -> Result:
        return self.run("exec", pod, "-n", namespace, "--", *command, timeout=timeout, check=check)


class Helm:
    def __init__(self, kubeconfig: str, binary: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.binary = binary or find_tool("helm")

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> Result:
        argv = [self.binary, "--kubeconfig", self.kubeconfig, *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            res = Result(
                argv, -1, _text(exc.stdout), _text(exc.stderr) + f"\n(timed out after {timeout}s)"
            )
        else:
            res = Result(argv, proc.returncode, proc.stdout, proc.stderr)
        if check and not res.ok:
            raise E2EError(res.describe())
        return res


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------------------------
# diagnostics


@dataclass
class Diagnostics:
    """What to print when something in the namespace goes wrong."""

    kubectl: Kubectl
    namespace: str
    operator_namespace: str = "kerasop-system"

    def events(self, limit: int = 40) -> str:
        res = self.kubectl.run(
            "get", "events", "-n", self.namespace, "--sort-by=.lastTimestamp", check=False
        )
        lines = (res.stdout or res.stderr).rstrip().splitlines()
        return "\n".join(lines[:1] + lines[1:][-limit:])

    def pods(self, selector: str | None = None) -> str:
        args = ["get", "pods", "-n", self.namespace, "-o", "wide"]
        if selector:
            args += ["-l", selector]
        res = self.kubectl.run(*args, check=False)
        return (res.stdout or res.stderr).rstrip()

    def pod_logs(self, selector: str, tail: int = 40, max_pods: int = 4) -> str:
        try:
            pods = self.kubectl.list("pods", self.namespace, selector)
        except E2EError as exc:
            return str(exc)
        out = []
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))[
            -max_pods:
        ]:
            name = pod["metadata"]["name"]
            out.append(f"--- logs of pod {name} (last {tail} lines) ---")
            out.append(self.kubectl.logs(name, self.namespace, tail=tail).rstrip())
        return "\n".join(out) or f"(no pods match {selector})"

    def operator_logs(self, tail: int = 40) -> str:
        res = self.kubectl.run(
            "logs",
            "-n",
            self.operator_namespace,
            "-l",
            "app.kubernetes.io/component=operator",
            f"--tail={tail}",
            "--all-containers",
            "--prefix",
            check=False,
        )
        return (res.stdout or res.stderr).rstrip()

    def object(self, kind: str, name: str) -> str:
        obj = self.kubectl.get(kind, name, self.namespace)
        if obj is None:
            return f"{kind} {name}: not found"
        shown = {k: obj.get(k) for k in ("spec", "status") if k in obj}
        return f"{kind} {name}:\n" + yaml.safe_dump(shown, sort_keys=False, width=120)

    def report(
        self,
        *,
        objects: Iterable[tuple[str, str]] = (),
        selectors: Iterable[str] = (),
        operator: bool = True,
    ) -> str:
        parts = []
        for kind, name in objects:
            try:
                parts.append(self.object(kind, name))
            except E2EError as exc:
                parts.append(f"{kind} {name}: {exc}")
        parts.append("--- pods ---\n" + self.pods())
        for sel in selectors:
            parts.append(self.pod_logs(sel))
        parts.append("--- recent events ---\n" + self.events())
        if operator:
            parts.append("--- operator log (tail) ---\n" + self.operator_logs())
        return "\n".join(parts)


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return {}


# --------------------------------------------------------------------------------------------
# trainer events in logs


def events_in(text: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The trainer's JSON event lines (``{"kerasop": ...}``) in a log, optionally of one kind."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "kerasop" in obj and (kind is None or obj["kerasop"] == kind):
            out.append(obj)
    return out


class LogFollower:
    """``kubectl logs -f`` of one pod in a thread: every line until the container ends."""

    def __init__(
        self, kubectl: Kubectl, pod: str, namespace: str, container: str | None = None
    ) -> None:
        args = ["logs", "-f", pod, "-n", namespace]
        if container:
            args += ["-c", container]
        self.proc = kubectl.popen(*args)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def finish(self, timeout: float = 120) -> str:
        """Wait for the stream to end (the container exited), or stop following."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._thread.join(timeout=10)
        return self.text()


# --------------------------------------------------------------------------------------------
# manifests


def load_example(name: str) -> dict[str, dict[str, Any]]:
    """examples/<name>: its documents by kind (a deep copy to adjust)."""
    docs = [d for d in yaml.safe_load_all((REPO / "examples" / name).read_text()) if d]
    return {d["kind"]: d for d in docs}


# What Pod Security "restricted" asks of the suite's own pods (the test namespace enforces it).
RESTRICTED_POD = {
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def runtime_pod(
    name: str,
    image: str,
    command: list[str],
    *,
    claims: dict[str, tuple[str, bool]] | None = None,
    scripts_configmap: str | None = None,
    restart: str = "Never",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod of the runtime image run as the image's user (uid 1000).

    ``claims``: mount path -> (PVC name, read only).
    """
    mounts, volumes = [], []
    for i, (path, (claim, ro)) in enumerate(sorted((claims or {}).items())):
        mounts.append({"name": f"vol{i}", "mountPath": path, "readOnly": ro})
        volumes.append(
            {"name": f"vol{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": ro}}
        )
    if scripts_configmap:
        mounts.append({"name": "scripts", "mountPath": "/scripts", "readOnly": True})
        volumes.append({"name": "scripts", "configMap": {"name": scripts_configmap}})
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    volumes.append({"name": "tmp", "emptyDir": {}})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL_PART_OF: "kerasop-e2e", **(labels or {})}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 2,
            "automountServiceAccountToken": False,
            "securityContext": RESTRICTED_POD,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": command,
                    "env": [
                        {"name": "HOME", "value": "/tmp"},
                        {"name": "PYTHONUNBUFFERED", "value": "1"},
                        {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"},
                        {"name": "KERAS_BACKEND", "value": "tensorflow"},
                    ],
                    "volumeMounts": mounts,
                    "securityContext": RESTRICTED_CONTAINER,
                }
            ],
            "volumes": volumes,
        },
    }


@dataclass
class Timer:
    """Named phases inside one scenario (printed in the session's duration table)."""

    marks: list[tuple[str, float]] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.marks.append((name, now - self._t0))
        self._t0 = now
