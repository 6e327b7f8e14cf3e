"""Names the operator's pods and the trainer/server processes must agree on.

The operator writes these environment variables, mount paths and server flags into the Job and
Deployment it creates; the trainer and the server read them (docs/CONTRACTS.md is the
prose). Both sides import them from here, so a rename cannot break one side silently.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Final

from kerasop.spec import GRPC_PORT, HTTP_PORT, ServerSpec

# Mount points inside the pods, and the processes' defaults when run outside a pod.
DATA_ROOT: Final = "/data"
STORE_ROOT: Final = "/models"
TERMINATION_LOG: Final = "/dev/termination-log"
SERVER_PORT: Final = HTTP_PORT
SERVER_GRPC_PORT: Final = GRPC_PORT  # spec.server.grpcPort's default

# The trainer's environment (also set for a script-mode job's own script).
ENV_SPEC: Final = "KERASOP_SPEC"  # the whole KerasTrainingJob as compact JSON
ENV_JOB_ID: Final = "KERASOP_JOB_ID"  # stable across restarts: a rerun resumes
ENV_DATA_ROOT: Final = "KERASOP_DATA_ROOT"
ENV_STORE_ROOT: Final = "KERASOP_STORE_ROOT"  # the server reads it too
ENV_TERMINATION_LOG: Final = "KERASOP_TERMINATION_LOG"
ENV_NUM_WORKERS: Final = "KERASOP_NUM_WORKERS"
ENV_WORKER_INDEX: Final = "KERASOP_WORKER_INDEX"
ENV_COORDINATOR: Final = "KERASOP_COORDINATOR"  # host:port of worker 0
# A distributed search (spec.tuning.parallelism > 1): this pod's index, 0 = keras-tuner's chief,
# and keras-tuner's own environment (the trainer sets the tuner id from the index).
ENV_TUNER_INDEX: Final = "KERASOP_TUNER_INDEX"
ENV_KERASTUNER_TUNER_ID: Final = "KERASTUNER_TUNER_ID"
ENV_KERASTUNER_ORACLE_IP: Final = "KERASTUNER_ORACLE_IP"
ENV_KERASTUNER_ORACLE_PORT: Final = "KERASTUNER_ORACLE_PORT"

# The server's environment fallbacks for its flags.
ENV_MODEL: Final = "KERASOP_MODEL"
ENV_MODEL_VERSION: Final = "KERASOP_MODEL_VERSION"
ENV_PORT: Final = "KERASOP_PORT"
ENV_GRPC_PORT: Final = "KERASOP_GRPC_PORT"  # --grpc-port's (0: off)
ENV_ENGINE: Final = "KERASOP_ENGINE"
ENV_ROLLOUT_FILE: Final = "KERASOP_ROLLOUT_FILE"
# A model store in a bucket (docs/model-store.md): its URI, the ObjectStoreSpec as JSON
# (endpoint, region, pathStyle, secretName) and an optional node-local cache folder.
ENV_STORE_URI: Final = "KERASOP_STORE_URI"
ENV_STORE_OPTIONS: Final = "KERASOP_STORE_OPTIONS"
ENV_STORE_CACHE: Final = "KERASOP_STORE_CACHE"
ENV_STORE_UNUSED_SECONDS: Final = "KERASOP_STORE_UNUSED_SECONDS"


# ``kerasop-serve``'s flags for ``spec.server``: the operator's Deployment, ``kerasop serve``
# and the server's own parser all come from ServerSpec's fields, so a new field reaches the
# pods without a second list to keep in step.


def server_flag(field_name: str) -> str:
    """``max_batch_size`` -> ``--max-batch-size``."""
    return "--" + field_name.replace("_", "-")


def server_flags(server: ServerSpec) -> list[str]:
    """The ``kerasop-serve`` arguments that carry ``server``."""
    argv: list[str] = []
    for name in ServerSpec.model_fields:
        value = getattr(server, name)
        # "2", not "2.0": the args of the Deployments already running stay the same (no restart).
        argv += [server_flag(name), f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """Add the flags of :func:`server_flags` to ``parser`` (type, default, help from the spec).

    Values below a field's lower bound are refused: the server cannot work with them. Its
    upper bounds are the cluster's policy (what a resource may ask for); a server started by
    hand may go beyond them, e.g. a batch window of seconds to hold requests in a test.
    """
    defaults = ServerSpec()
    for name, field in ServerSpec.model_fields.items():
        convert: Callable[[str], Any]
        if field.annotation is int:
            convert = int
        elif field.annotation is float:
            convert = float
        else:  # a new kind of field needs its own conversion here
            raise TypeError(f"ServerSpec.{name}: no flag for {field.annotation}")
        lower = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), None)
        parser.add_argument(
            server_flag(name),
            dest=name,
            type=_at_least(convert, lower),
            default=getattr(defaults, name),
            help=field.description,
        )


def server_flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The values of :func:`add_server_flags`'s flags, by ServerSpec field name."""
    return {name: getattr(args, name) for name in ServerSpec.model_fields}


def _at_least(convert: Callable[[str], Any], lower: Any) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = convert(text)
        if lower is not None and not value >= lower:  # `not >=`: NaN is refused too
            raise argparse.ArgumentTypeError(f"must be >= {lower}, got {text}")
        return value

    parse.__name__ = convert.__name__  # argparse names the type in "invalid int value"
    return parse
