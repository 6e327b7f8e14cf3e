"""`kerasop`: run the cluster's YAML on this machine (the embedded default).

    kerasop sample-data dense               # generate a 784-feature CSV (dense example)
    kerasop train -f examples/dense-classifier.yaml
    kerasop serve -f examples/dense-classifier.yaml      # http://127.0.0.1:8080
    kerasop predict -f examples/dense-classifier.yaml --csv .kerasop/data/dense/train.csv --rows 3
    kerasop demo                             # all of the above in one go
    kerasop tensorboard -f job.yaml          # TensorBoard on the job's logs (training.tensorboard)
    kerasop history dense-classifier         # versions: lineage, metrics, rollout outcome

A local folder stands in for each volume: ``--data-dir`` (default
``.kerasop/data``) for the data volume and ``--store`` (default
``.kerasop/models``) for the model store, laid out exactly as on the cluster.
Heavy imports (Keras, the server) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from kerasop import events
from kerasop.contracts import SERVER_PORT, server_flags
from kerasop.spec import (
    KerasModelService,
    KerasTrainingJob,
    ObjectStoreSpec,
    SpecError,
    load_documents,
)
from kerasop_cli import console

DEFAULT_WORKDIR = Path(".kerasop")
# examples/ ships inside the package (kerasop_cli/examples links to it; pyproject.toml), so the
# demo runs from an installed wheel or image as well as from a checkout.
DEMO_EXAMPLE = "dense-classifier.yaml"


def demo_example() -> Path:
    return Path(str(resources.files("kerasop_cli.examples").joinpath(DEMO_EXAMPLE)))


class CliError(Exception):
    """A user-facing error: printed as one line, exit code attached."""

    def __init__(self, message: str, exit_code: int = events.EXIT_BAD_SPEC) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def read_resources(path: Path) -> list[KerasTrainingJob | KerasModelService]:
    try:
        docs = load_documents(path.read_text())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except SpecError as exc:
        raise CliError(f"{path}: {exc}") from None
    if not docs:
        raise CliError(f"{path}: no KerasTrainingJob or KerasModelService in the file")
    return docs


Resource = TypeVar("Resource", KerasTrainingJob, KerasModelService)


def pick(docs: list[Any], kind: type[Resource], name: str | None = None) -> Resource:
    """The one document of ``kind`` (named ``name`` if given)."""
    matches = [d for d in docs if isinstance(d, kind) and (name is None or d.metadata.name == name)]
    if len(matches) == 1:
        return matches[0]
    what = f"{kind.__name__}" + (f" named {name!r}" if name else "")
    if not matches:
        raise CliError(f"no {what} in the file")
    raise CliError(f"several {what}s in the file: pass --name")


def served_model(docs: list[Any], service: KerasModelService) -> tuple[str, int | None]:
    """Model name and pinned version a KerasModelService serves, resolved locally.

    A service that follows a training job serves the job's model; the job must
    be in the same file (locally there is no API server to look it up).
    """
    ref = service.spec.model
    if ref.training_job is None:
        assert ref.name is not None  # guaranteed by ServedModelSpec
        return ref.name, ref.version
    job = pick(docs, KerasTrainingJob, ref.training_job)
    return job.model_name, ref.version


def served_bucket(
    docs: list[Any], service: KerasModelService
) -> tuple[str | None, ObjectStoreSpec | None]:
    """The bucket (uri, store) a service's model lives in; (None, None) for a volume."""
    ref = service.spec.model
    if ref.training_job is None:
        return ref.uri, ref.store
    output = pick(docs, KerasTrainingJob, ref.training_job).spec.output
    return output.uri, output.store


def label_column(docs: list[Any], model: str) -> str | None:
    """The label column of the training job in the file that produces ``model``."""
    jobs = [d for d in docs if isinstance(d, KerasTrainingJob) and d.model_name == model]
    return jobs[0].spec.data.label_column if jobs else None


def feature_columns(docs: list[Any], model: str) -> list[str] | None:
    """The feature columns (``None``: all but the label) of the job that produces ``model``."""
    jobs = [d for d in docs if isinstance(d, KerasTrainingJob) and d.model_name == model]
    return jobs[0].spec.data.feature_columns if jobs else None


def format_progress(event: events.Event) -> str | None:
    """One human line for a trainer event (None for events not worth a line)."""
    trial = (event.model_extra or {}).get("trialId")
    if trial is not None and isinstance(event, events.StartEvent | events.EpochEvent):
        text = _format_event(event)
        return f"trial {trial}: {text}" if text else None
    return _format_event(event)


def _format_event(event: events.Event) -> str | None:
    if isinstance(event, events.TrialEvent):
        return format_trial(event)
    if isinstance(event, events.StartEvent):
        epoch, step = event.resumed_from_epoch, event.resumed_from_step
        note = f", resuming after epoch {epoch}" if epoch or step else ""
        note += f" and {step} batches of the next" if step else ""
        if event.tensorboard_path:
            note += f"; TensorBoard logs in the model store: {event.tensorboard_path}"
        return f"training: {event.epochs} epochs{note}"
    if isinstance(event, events.EpochEvent):
        return f"epoch {event.epoch}/{event.epochs}  {_metrics_text(event.metrics)}"
    if isinstance(event, events.DoneEvent):
        return (
            f"saved {event.model_name} version {event.model_version} "
            f"at {event.model_path}\nvalidation: {_metrics_text(event.metrics)}"
        )
    if isinstance(event, events.CheckpointEvent):
        return f"stopping: saved after epoch {event.epoch} and {event.step} batches of the next"
    return f"failed ({event.reason}): {event.message}"


def format_trial(event: events.TrialEvent) -> str:
    """``trial 3 completed [4/6]: training.learningRate=0.01 -> loss 0.41; best: trial 2 (0.38)``."""
    values = " ".join(f"{k}={v}" for k, v in event.values.items())
    head = f"trial {event.trial_id} {event.status} [{event.done}/{event.total}]: {values}"
    if event.status == "failed":
        return f"{head} ({event.message})"
    text = f"{head} -> {event.metric} {_score(event.objective)}"
    if event.best:
        text += f"; best: trial {event.best[0].trial_id} ({_score(event.best[0].objective)})"
    return text


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def rows_from_csv(
    path: Path, rows: int, drop: str | None, columns: list[str] | None = None
) -> list[list[float | str]]:
    """The first ``rows`` rows of a CSV: the ``columns`` (default: all but ``drop``) in
    that order, numbers as numbers and other values (categories, text) as strings."""
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            out = []
            for row in reader:
                keys = columns or [k for k in row if k != drop]
                missing = [k for k in keys if k not in row]
                if missing:
                    raise CliError(f"{path} has no column(s) {', '.join(missing)}")
                out.append([_number_or_text(row[k]) for k in keys])
                if len(out) == rows:
                    break
    except OSError as exc:
        raise CliError(f"cannot read rows from {path}: {exc}") from None
    if not out:
        raise CliError(f"{path} has no rows")
    return out


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    for doc in read_resources(args.file):
        print(f"{doc.kind} {doc.metadata.name}: valid")
    return 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    from kerasop_trainer import sample_data

    target = args.data_dir / args.dataset
    writers = {
        "dense": lambda: sample_data.write_dense_csv(target / "train.csv"),
        "images": lambda: sample_data.write_image_csv(target),
        "image-folder": lambda: sample_data.write_image_folder(target),
        "npz": lambda: sample_data.write_npz(target / "train.npz"),
        "scaled": lambda: sample_data.write_scaled_csv(target / "train.csv"),
        "mixed": lambda: sample_data.write_mixed_csv(target / "train.csv"),
        "text": lambda: sample_data.write_text_csv(target / "train.csv"),
        "own-models": lambda: sample_data.write_own_models(target),
    }
    print(f"wrote {writers[args.dataset]()}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    docs = read_resources(args.file)
    job = pick(docs, KerasTrainingJob, args.name)
    os.environ.setdefault("KERAS_BACKEND", job.spec.training.backend)
    from kerasop.objstore import ObjectStoreError
    from kerasop_trainer.errors import TrainerError, store_error
    from kerasop_trainer.main import freeze_for_exit
    from kerasop_trainer.train import run

    display = console.TrainingDisplay()

    def show(line: str) -> None:
        event = events.decode(line)
        text = format_progress(event) if event else None
        if text:
            display.line(text)

    job_id = args.job_id or f"local-{job.metadata.name}"
    if args.processes and job.spec.tuning is None:
        raise CliError("--processes runs a search: the job has no spec.tuning")
    try:
        if job.spec.script is not None:  # the user's own script, as in a pod
            from kerasop_trainer.script import run_script

            run_script(
                job, Path(args.data_dir), Path(args.store), job_id, emit=show, python_first=True
            )
        elif job.spec.tuning is not None and args.processes:  # as the cluster's pods do
            from kerasop_cli.local_search import run_search_processes

            code = run_search_processes(
                job, args.data_dir, args.store, job_id, args.processes, show
            )
            if code:
                print(f"error: the search's chief exited with {code}", file=sys.stderr)
                return code
        elif job.spec.tuning is not None:  # a search: its trials one after the other
            from kerasop_trainer import tuning

            tuning.run(job, args.data_dir, args.store, job_id, emit=show)
        else:
            run(
                job,
                data_root=args.data_dir,
                store_root=args.store,
                job_id=job_id,
                emit=show,
                on_batch=display.batch if display.live else None,
            )
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ObjectStoreError as exc:  # publishing or checkpointing to a bucket
        err = store_error(exc)
        print(f"error: {err.reason}: {err}", file=sys.stderr)
        return err.exit_code
    finally:
        display.close()
    freeze_for_exit()  # the process ends now: skip collecting TensorFlow's objects
    return 0


def server_argv(args: argparse.Namespace, docs: list[Any]) -> list[str]:
    service = pick(docs, KerasModelService, args.name)
    model, version = served_model(docs, service)
    argv = [
        "--store-root", str(args.store), "--model", model,
        "--host", args.host, "--port", str(args.port),
        *server_flags(service.spec.server),
    ]  # fmt: skip
    if version is not None and service.spec.rollout is None:  # with a rollout, the plan pins
        argv += ["--version", str(version)]
    if args.grpc_port is not None:  # after server_flags' --grpc-port: the last one wins
        argv += ["--grpc-port", str(args.grpc_port)]
    uri, store = served_bucket(docs, service)
    if uri is not None:  # mirrored under the local store, apart from its own models
        options = (store or ObjectStoreSpec()).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        argv += ["--store-uri", uri, "--store-options", json.dumps(options)]
        argv += ["--store-cache", str(Path(args.store) / ".buckets")]
    return argv


def rollout_file(args: argparse.Namespace, service: str) -> Path:
    """Where the local rollout plan of ``service`` lives (its status file beside it)."""
    store: Path = args.store
    return store.parent / "rollout" / f"{service}.json"


def cmd_serve(args: argparse.Namespace) -> int:
    docs = read_resources(args.file)
    argv = server_argv(args, docs)
    from kerasop_server.main import main as serve_main

    service = pick(docs, KerasModelService, args.name)
    if service.spec.rollout is None:
        return serve_main(argv) or 0
    from kerasop_cli.local_rollout import LocalRollout

    model, pinned = served_model(docs, service)
    plan = rollout_file(args, service.metadata.name)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    loop = LocalRollout(
        service.spec.rollout, args.store, model, plan,
        f"http://{host}:{args.port}/metrics", pinned=pinned,
    )  # fmt: skip
    loop.start()
    try:
        return serve_main([*argv, "--rollout-file", str(plan)]) or 0
    finally:
        loop.stop()


def cmd_history(args: argparse.Namespace) -> int:
    from kerasop_cli.local_rollout import format_history, history_rows

    rows = history_rows(args.store, args.model, rollout_file(args, args.service or args.model)
                        .with_suffix(".status.json"))  # fmt: skip
    if not rows:
        raise CliError(f"no version of model {args.model!r} in {args.store}")
    print(format_history(rows))
    return 0


def post_json(url: str, body: dict[str, Any] | None, timeout: float = 30.0) -> dict[str, Any]:
    """POST ``body`` as JSON (GET when it is None); the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise CliError(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None
    except urllib.error.URLError as exc:
        raise CliError(f"{url}: {exc.reason}") from None


def cmd_predict(args: argparse.Namespace) -> int:
    docs = read_resources(args.file)
    model, _ = served_model(docs, pick(docs, KerasModelService, args.name))
    if args.csv:
        label, columns = label_column(docs, model), feature_columns(docs, model)
        instances = rows_from_csv(args.csv, args.rows, label, columns)
    else:
        instances = json.loads(args.instances)
    base = f"{args.url.rstrip('/')}/v1/models/{model}"
    answer = post_json(f"{base}:predict", {"instances": instances})
    print(json.dumps(answer))
    info = post_json(f"{base}/metadata", None).get("kerasop", {})
    output = info.get("metadata", {}).get("output", {})
    print("\n".join(console.describe_predictions(answer.get("predictions", []), output)))
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    """TensorBoard on every logged run of the job's model (``training.tensorboard``)."""
    job = pick(read_resources(args.file), KerasTrainingJob, args.name)
    logdir = args.store / job.model_name / "tensorboard"
    if not logdir.is_dir():
        raise CliError(f"no TensorBoard logs in {logdir}: set training.tensorboard: true and train")
    if importlib.util.find_spec("tensorboard") is None:
        raise CliError("TensorBoard is not installed: pip install tensorboard")
    print(f"TensorBoard on {logdir}: http://127.0.0.1:{args.port}", flush=True)
    argv = ["--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(args.port)]
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", *argv])
    # stopping this command stops TensorBoard too (Ctrl-C reaches both already)
    signal.signal(signal.SIGTERM, lambda *_: board.terminate())
    return board.wait()


def wait_ready(base_url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CliError(f"the model server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise CliError(f"the model server was not ready after {timeout:.0f}s")


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate data, train example (a), serve it, predict, print, stop."""
    args.file = demo_example()
    args.dataset = "dense"
    if not (args.data_dir / "dense" / "train.csv").exists():
        cmd_sample_data(args)
    code = cmd_train(args)
    if code:
        return code
    docs = read_resources(args.file)
    server = subprocess.Popen(
        [sys.executable, "-m", "kerasop_server.main", *server_argv(args, docs)]
    )
    base_url = f"http://{args.host}:{args.port}"
    try:
        wait_ready(base_url, server, timeout=120)
        print(f"serving at {base_url}")
        args.url, args.csv, args.rows = base_url, args.data_dir / "dense" / "train.csv", 3
        return cmd_predict(args)
    finally:
        server.terminate()
        server.wait(timeout=30)


# --------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kerasop", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=DEFAULT_WORKDIR / "data",
                        help="local folder standing in for the data volume")  # fmt: skip
    common.add_argument("--store", type=Path, default=DEFAULT_WORKDIR / "models",
                        help="local folder standing in for the model store volume")  # fmt: skip
    common.add_argument("--name", help="which resource, when the file holds several")
    with_file = argparse.ArgumentParser(add_help=False, parents=[common])
    with_file.add_argument("-f", "--file", type=Path, required=True, help="resource YAML")
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("--verbose", action="store_true",
                           help="show TensorFlow's start-up logs")  # fmt: skip
    serving = argparse.ArgumentParser(add_help=False)
    serving.add_argument("--host", default="127.0.0.1")
    serving.add_argument("--port", type=int, default=SERVER_PORT)
    serving.add_argument("--grpc-port", type=int, default=None,
                         help="OIP v2 over gRPC here (0: off); default: the spec's "
                              "server.grpcPort")  # fmt: skip

    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", parents=[with_file], help="check a file against the spec")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("sample-data", parents=[common], help="generate an example dataset")
    p.add_argument(
        "dataset",
        choices=["dense", "images", "image-folder", "npz", "scaled", "mixed", "text", "own-models"],
    )
    p.set_defaults(func=cmd_sample_data)
    p = sub.add_parser("train", parents=[with_file, verbosity],
                       help="train a KerasTrainingJob here (a search: its trials,"
                            " then the best one)")  # fmt: skip
    p.add_argument("--job-id", help="resume identity (default: local-<name>)")
    p.add_argument("--processes", type=int, default=0, metavar="N",
                   help="a search: N processes, the first also serving the oracle,"
                        " keras-tuner's distributed mode as on a cluster (default: the"
                        " trials in this process, one after the other)")  # fmt: skip
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("serve", parents=[with_file, serving], help="serve a KerasModelService")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("predict", parents=[with_file], help="send a prediction request")
    p.add_argument("--url", default=f"http://127.0.0.1:{SERVER_PORT}")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", type=Path, help="take rows from this CSV (label dropped)")
    source.add_argument("--instances", help="JSON list of instances")
    p.add_argument("--rows", type=int, default=1)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("demo", parents=[common, serving, verbosity],
                       help="train, serve, predict example (a)")  # fmt: skip
    p.add_argument("--job-id", default=None)
    p.set_defaults(func=cmd_demo, processes=0)  # cmd_train's arguments: example (a) trains
    p = sub.add_parser("tensorboard", parents=[with_file, verbosity],
                       help="TensorBoard on a job's logs")  # fmt: skip
    p.add_argument("--port", type=int, default=6006)
    p.set_defaults(func=cmd_tensorboard)
    p = sub.add_parser("history", parents=[common], help="a model's versions, lineage, outcomes")
    p.add_argument("model", help="model name in the store")
    p.add_argument("--service", help="KerasModelService whose rollout outcomes to show")
    p.set_defaults(func=cmd_history)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = hasattr(args, "verbose") and not args.verbose
    try:
        with console.quiet_native_logs() if quiet else contextlib.nullcontext():
            code: int = args.func(args)
            return code
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
