"""Pod start-up through the operator against the same pods without it (needs a cluster with a kubelet).

    python bench/pod_startup.py [--part train,serve] [--jobs 50] [--services 10] [--parallel 5]
                                [--runtime-image kerasop-runtime:0.1.0]
                                [--serving-image kerasop-serving:0.1.0]
                                [--pull-policy IfNotPresent] [--out bench/results] [--dry-run]

Against the cluster of ``$KUBECONFIG`` (the operator installed), in a namespace the
script creates and deletes. Every object is applied with ``kubectl apply``, as a user
would; every time comes from the API objects themselves (creationTimestamp, container
startedAt, the Ready condition's lastTransitionTime), never from polling, so the
script's own delays do not count. The API server writes them to the second: the
figures are means/p50/p99 over many objects.

train  ``--jobs`` KerasTrainingJobs (``--parallel`` at a time): job created -> its
       trainer container running; against the same number of plain batch/v1 Jobs of the
       runtime image (same volume, same security context) applied the same way: Job
       created -> container running. Goal: ratio of the p50s <= 1.2. Each job is
       deleted once its pod runs (nothing is trained).
serve  one small CNN trained once (``kerasop sample-data images`` on a PVC, a
       KerasTrainingJob of two Conv2D layers), then ``--services`` KerasModelServices
       of it (``spec.image``: the serving image) one after the other: service created ->
       server pod Ready, and server pod created -> Ready; against plain pods of the
       serving image running ``sleep``: created -> Ready. Goal: server pod created ->
       Ready <= 3 s with the image on the node.

``--dry-run`` prints the manifests it would apply (YAML, one document each) and
exits: no cluster is needed beyond what ``kubectl`` needs to print them.

Results: a table on stdout, bench/results/pod_startup.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
API_VERSION = "kerasop.io/v1alpha1"
LABEL_BENCH = "kerasop.io/bench"
LABEL_TRAINING_JOB = "kerasop.io/training-job"  # set by the operator on trainer pods
LABEL_MODEL_SERVICE = "kerasop.io/model-service"  # set by the operator on server pods
DATA_CLAIM = "startup-data"
MODELS_CLAIM = "startup-models"
CNN_JOB = "startup-cnn"


# --------------------------------------------------------------------------------------------
# manifests


def pod_spec(image: str, pull: str, command: list[str], claims: dict[str, str]) -> dict[str, Any]:
    """A restricted (Pod Security) pod running ``command`` as the images' user (uid 1000)."""
    mounts = [{"name": f"vol{i}", "mountPath": p} for i, p in enumerate(sorted(claims))]
    volumes = [
        {"name": f"vol{i}", "persistentVolumeClaim": {"claimName": claims[p]}}
        for i, p in enumerate(sorted(claims))
    ]
    return {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "main",
                "image": image,
                "imagePullPolicy": pull,
                "command": command,
                "env": [{"name": "HOME", "value": "/tmp"}],
                "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "volumes": [*volumes, {"name": "tmp", "emptyDir": {}}],
    }


def claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {LABEL_BENCH: "pod-startup"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def plain_pod(
    name: str, image: str, pull: str, command: list[str], **claims: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL_BENCH: "pod-startup"}},
        "spec": pod_spec(image, pull, command, {f"/{k}": v for k, v in claims.items()}),
    }


def plain_job(name: str, image: str, pull: str) -> dict[str, Any]:
    """What the operator's trainer Job amounts to, written by hand: same image and volume."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {LABEL_BENCH: "pod-startup"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {LABEL_BENCH: "pod-startup"}},
                "spec": pod_spec(image, pull, ["sleep", "30"], {"/models": MODELS_CLAIM}),
            },
        },
    }


def startup_job(name: str) -> dict[str, Any]:
    """A tiny training job writing to the shared models claim (it is deleted once running)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "KerasTrainingJob",
        "metadata": {"name": name, "labels": {LABEL_BENCH: "pod-startup"}},
        "spec": {
            "data": {"format": "csv", "path": "dense/train.csv"},
            "model": {"layers": [{"type": "Dense", "units": 1, "activation": "sigmoid"}]},
            "training": {"epochs": 1},
            "output": {"storage": {"claimName": MODELS_CLAIM}},
        },
    }


def cnn_job() -> dict[str, Any]:
    """The small CNN the services serve, on ``kerasop sample-data images`` (32x32 shapes)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "KerasTrainingJob",
        "metadata": {"name": CNN_JOB, "labels": {LABEL_BENCH: "pod-startup"}},
        "spec": {
            "data": {
                "format": "imageCsv",
                "path": "images/data.csv",
                "imageColumn": "path",
                "labelColumn": "label",
                "image": {"height": 32, "width": 32, "channels": 3},
                "volume": {"claimName": DATA_CLAIM},
            },
            "model": {
                "layers": [
                    {"type": "Rescaling", "scale": 1 / 255},
                    {"type": "Conv2D", "filters": 8, "kernelSize": 3, "activation": "relu"},
                    {"type": "MaxPooling2D"},
                    {"type": "Conv2D", "filters": 16, "kernelSize": 3, "activation": "relu"},
                    {"type": "GlobalAveragePooling2D"},
                    {"type": "Dense", "units": 1, "activation": "sigmoid"},
                ]
            },
            "training": {"epochs": 2, "loss": "binary_crossentropy", "batchSize": 32},
            "output": {"storage": {"claimName": MODELS_CLAIM}},
        },
    }


def model_service(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "KerasModelService",
        "metadata": {"name": name, "labels": {LABEL_BENCH: "pod-startup"}},
        "spec": {"model": {"trainingJob": CNN_JOB}, "image": image},
    }


def data_pod(runtime_image: str, pull: str) -> dict[str, Any]:
    script = "kerasop sample-data images --data-dir /data && ls /data/images | head -3"
    return plain_pod("startup-data-gen", runtime_image, pull, ["sh", "-c", script], data=DATA_CLAIM)


def manifests(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every object the run applies, by step."""
    image, pull = args.runtime_image, args.pull_policy
    steps: dict[str, list[dict[str, Any]]] = {"claims": [claim(MODELS_CLAIM)]}
    if "train" in args.part:
        steps["train"] = [startup_job(f"startup-job-{i}") for i in range(args.jobs)]
        steps["train-baseline"] = [
            plain_job(f"plain-job-{i}", image, pull) for i in range(args.jobs)
        ]
    if "serve" in args.part:
        steps["claims"].append(claim(DATA_CLAIM))
    # Binds the claims (provisioned on first use) and pulls the image before anything is timed.
    claims = {
        c["metadata"]["name"].removeprefix("startup-"): c["metadata"]["name"]
        for c in steps["claims"]
    }
    steps["warm-up"] = [plain_pod("startup-warm-up", image, pull, ["true"], **claims)]
    if "serve" in args.part:
        steps["serve-model"] = [data_pod(image, pull), cnn_job()]
        steps["serve"] = [
            model_service(f"startup-svc-{i}", args.serving_image) for i in range(args.services)
        ]
        steps["serve-baseline"] = [
            plain_pod(f"plain-server-{i}", args.serving_image, pull, ["sleep", "600"])
            for i in range(args.services)
        ]
    return steps


# --------------------------------------------------------------------------------------------
# the cluster, through kubectl


class Kubectl:
    def __init__(self, namespace: str) -> None:
        self.binary = os.environ.get("KUBECTL") or shutil.which("kubectl") or "kubectl"
        self.namespace = namespace

    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        cmd = [self.binary, "-n", self.namespace, *args]
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])}: {done.stderr.strip()[:800]}")
        return done.stdout

    def apply(self, doc: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", stdin=yaml.safe_dump(doc))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.run("get", kind, name, "--ignore-not-found", "-o", "json")
        return json.loads(out) if out.strip() else None

    def pods(self, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            self.run("get", "pods", "-l", selector, "-o", "json")
        )["items"]
        return items

    def delete(self, kind: str, name: str) -> None:
        self.run("delete", kind, name, "--ignore-not-found", "--wait=false")


def ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def container_started(pod: dict[str, Any]) -> float | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        started = (state.get("running") or state.get("terminated") or {}).get("startedAt")
        if started:
            return ts(started)
    return None


def ready_at(pod: dict[str, Any]) -> float | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return ts(c.get("lastTransitionTime"))
    return None


def wait(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s")


# --------------------------------------------------------------------------------------------
# measuring


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "mean_s": round(statistics.fmean(values), 2) if values else None,
        "p50_s": round(statistics.median(values), 2) if values else None,
        "p99_s": round(percentile(sorted(values), 0.99), 2) if values else None,
        "values": [round(v, 2) for v in values],
    }


def time_objects(
    kc: Kubectl,
    docs: list[dict[str, Any]],
    parallel: int,
    measure: Callable[[Kubectl, dict[str, Any]], dict[str, float]],
    cleanup: Callable[[Kubectl, dict[str, Any]], None],
) -> list[dict[str, float]]:
    """Apply each doc (``parallel`` at a time), ``measure`` it, ``cleanup`` it: what
    ``measure`` returned for each doc, in the order of ``docs``."""

    def one(doc: dict[str, Any]) -> dict[str, float]:
        kc.apply(doc)
        try:
            return measure(kc, doc)
        finally:
            cleanup(kc, doc)

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, docs))


def created_at(kc: Kubectl, kind: str, name: str) -> float:
    obj = kc.get(kind, name)
    assert obj is not None, f"{kind} {name} is gone"
    value = ts(obj["metadata"]["creationTimestamp"])
    assert value is not None
    return value


def first_pod(
    kc: Kubectl, selector: str, field: Callable[[dict[str, Any]], float | None]
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        return next((p for p in kc.pods(selector) if field(p) is not None), None)

    pod: dict[str, Any] = wait(f"a pod with {selector}", probe, timeout=300)
    return pod


def measure_training_job(kc: Kubectl, doc: dict[str, Any]) -> dict[str, float]:
    """Created -> trainer running, split at the moment the operator's batch/v1 Job appeared."""
    name = doc["metadata"]["name"]
    pod = first_pod(kc, f"{LABEL_TRAINING_JOB}={name}", container_started)
    started, created = container_started(pod), created_at(kc, "kerastrainingjob", name)
    job_created = created_at(kc, "job", f"{name}-trainer")
    return {
        "created_to_running": started - created,  # type: ignore[operator]
        "operator": job_created - created,
        "job_to_running": started - job_created,  # type: ignore[operator]
    }


def measure_plain_job(kc: Kubectl, doc: dict[str, Any]) -> dict[str, float]:
    name = doc["metadata"]["name"]
    pod = first_pod(kc, f"job-name={name}", container_started)
    return {"created_to_running": container_started(pod) - created_at(kc, "job", name)}  # type: ignore[operator]


def measure_any_job(kc: Kubectl, doc: dict[str, Any]) -> dict[str, float]:
    if doc["kind"] == "KerasTrainingJob":
        return measure_training_job(kc, doc)
    return measure_plain_job(kc, doc)


def measure_service(kc: Kubectl, doc: dict[str, Any]) -> dict[str, float]:
    name = doc["metadata"]["name"]
    pod = first_pod(kc, f"{LABEL_MODEL_SERVICE}={name}", ready_at)
    ready = ready_at(pod)
    assert ready is not None
    return {
        "created_to_ready": ready - created_at(kc, "kerasmodelservice", name),
        "pod_created_to_ready": ready - ts(pod["metadata"]["creationTimestamp"]),  # type: ignore[operator]
    }


def measure_plain_pod(kc: Kubectl, doc: dict[str, Any]) -> dict[str, float]:
    name = doc["metadata"]["name"]
    pod = wait(f"pod {name} Ready", lambda: (p := kc.get("pod", name)) and ready_at(p) and p, 300)
    return {"pod_created_to_ready": ready_at(pod) - ts(pod["metadata"]["creationTimestamp"])}  # type: ignore[operator]


def delete_doc(kc: Kubectl, doc: dict[str, Any]) -> None:
    kc.delete(doc["kind"].lower(), doc["metadata"]["name"])


def run_to_completion(kc: Kubectl, pod: dict[str, Any], timeout: float) -> None:
    """Apply a pod and wait until it has succeeded."""
    name = pod["metadata"]["name"]
    kc.apply(pod)

    def finished() -> str | None:
        phase = ((kc.get("pod", name) or {}).get("status") or {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    if wait(f"pod {name} finished", finished, timeout) != "Succeeded":
        raise RuntimeError(f"pod {name} failed: {kc.run('logs', name)}")


def prepare_model(kc: Kubectl, steps: list[dict[str, Any]], timeout: float) -> None:
    """Sample images on the data claim, then the CNN trained on them."""
    pod, job = steps
    run_to_completion(kc, pod, timeout)
    kc.apply(job)

    def trained() -> str | None:
        st = (kc.get("kerastrainingjob", CNN_JOB) or {}).get("status") or {}
        return st.get("phase") if st.get("phase") in ("Succeeded", "Failed") else None

    if wait("the CNN trained", trained, timeout, interval=2) != "Succeeded":
        raise RuntimeError(f"training {CNN_JOB} failed: {kc.get('kerastrainingjob', CNN_JOB)}")


def run(args: argparse.Namespace, steps: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    namespace = args.namespace or f"kerasop-startup-{os.getpid()}"
    kc = Kubectl(namespace)
    kc.run("create", "namespace", namespace)
    out: dict[str, Any] = {"namespace": namespace}
    try:
        for doc in steps["claims"]:
            kc.apply(doc)
        run_to_completion(kc, steps["warm-up"][0], args.timeout)
        if "train" in steps:
            print(
                f"train: {len(steps['train'])} KerasTrainingJobs and as many plain Jobs,"
                " alternating ...",
                flush=True,
            )
            # Alternating, so both see the same load (pods starting, pods being deleted).
            mixed = [
                d
                for pair in zip(steps["train"], steps["train-baseline"], strict=True)
                for d in pair
            ]
            results = time_objects(kc, mixed, args.parallel, measure_any_job, delete_doc)
            jobs, plain = results[0::2], results[1::2]
            out["train"] = {
                "kerastrainingjob": summary([r["created_to_running"] for r in jobs]),
                "kerastrainingjob_until_its_job": summary([r["operator"] for r in jobs]),
                "kerastrainingjob_job_to_running": summary([r["job_to_running"] for r in jobs]),
                "plain_job": summary([r["created_to_running"] for r in plain]),
            }
        if "serve" in steps:
            print("serve: sample data and the CNN ...", flush=True)
            prepare_model(kc, steps["serve-model"], timeout=args.timeout)
            print(f"serve: {len(steps['serve'])} KerasModelServices, then plain pods ...")
            services = time_objects(kc, steps["serve"], 1, measure_service, delete_doc)
            plain = time_objects(kc, steps["serve-baseline"], 1, measure_plain_pod, delete_doc)
            out["serve"] = {
                "service_created_to_ready": summary([r["created_to_ready"] for r in services]),
                "server_pod_created_to_ready": summary(
                    [r["pod_created_to_ready"] for r in services]
                ),
                "plain_pod_created_to_ready": summary([r["pod_created_to_ready"] for r in plain]),
            }
    finally:
        kc.run("delete", "namespace", namespace, "--wait=false")
    return out


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'what':42} {'n':>4} {'mean s':>7} {'p50 s':>7} {'p99 s':>7}")
    for part, rows in result.items():
        if not isinstance(rows, dict):
            continue
        for what, s in rows.items():
            print(
                f"{part + ': ' + what:42} {s['n']:>4} {s['mean_s']!s:>7} {s['p50_s']!s:>7} {s['p99_s']!s:>7}"
            )
    if "train" in result:
        a, b = result["train"]["kerastrainingjob"]["p50_s"], result["train"]["plain_job"]["p50_s"]
        print(f"train p50 ratio (goal <= 1.2): {a / b:.2f}" if b else "train p50 ratio: n/a")


def plot(result: dict[str, Any], target: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    parts = [p for p in ("train", "serve") if p in result]
    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 3.6), squeeze=False)
    for ax, part in zip(axes[0], parts, strict=True):
        rows = result[part]
        ax.boxplot([r["values"] for r in rows.values()])
        ax.set_xticks(range(1, len(rows) + 1), list(rows))
        ax.set_ylabel("seconds")
        ax.set_title(part)
        ax.tick_params(axis="x", labelsize=7, rotation=15)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", default="train,serve", type=lambda s: s.split(","))
    p.add_argument("--jobs", type=int, default=50, help="training jobs (and plain Jobs)")
    p.add_argument("--services", type=int, default=10, help="model services (and plain pods)")
    p.add_argument("--parallel", type=int, default=5, help="training jobs in flight at once")
    p.add_argument("--runtime-image", default="kerasop-runtime:0.1.0")
    p.add_argument("--serving-image", default="kerasop-serving:0.1.0")
    p.add_argument("--pull-policy", default="IfNotPresent", choices=["IfNotPresent", "Never"])
    p.add_argument("--namespace", help="namespace to create (default kerasop-startup-<pid>)")
    p.add_argument("--timeout", type=float, default=900, help="seconds for data and training")
    p.add_argument("--dry-run", action="store_true", help="print the manifests, apply nothing")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    unknown = set(args.part) - {"train", "serve"}
    if unknown:
        p.error(f"--part: unknown {', '.join(sorted(unknown))} (train, serve)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps = manifests(args)
    if args.dry_run:
        print(yaml.safe_dump_all([d for docs in steps.values() for d in docs], sort_keys=False))
        return 0
    result = run(args, steps)
    print_table(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pod_startup.json").write_text(json.dumps(result, indent=1))
    plotted = plot(result, args.out / "pod_startup.png")
    print(f"\nwrote {args.out / 'pod_startup.json'}" + (" and pod_startup.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
