"""Names the operator's pods and the trainer/server processes must agree on.

The operator writes these environment variables and mount paths into the Job and
Deployment it creates; the trainer and the server read them (docs/CONTRACTS.md is the
prose). Both sides import them from here, so a rename cannot break one side silently.
"""

from __future__ import annotations

from typing import Final

# Mount points inside the pods, and the processes' defaults when run outside a pod.
DATA_ROOT: Final = "/data"
STORE_ROOT: Final = "/models"
TERMINATION_LOG: Final = "/dev/termination-log"
SERVER_PORT: Final = 8080

# The trainer's environment (also set for a script-mode job's own script).
ENV_SPEC: Final = "KERASOP_SPEC"  # the whole KerasTrainingJob as compact JSON
ENV_JOB_ID: Final = "KERASOP_JOB_ID"  # stable across restarts: a rerun resumes
ENV_DATA_ROOT: Final = "KERASOP_DATA_ROOT"
ENV_STORE_ROOT: Final = "KERASOP_STORE_ROOT"  # the server reads it too
ENV_TERMINATION_LOG: Final = "KERASOP_TERMINATION_LOG"
ENV_NUM_WORKERS: Final = "KERASOP_NUM_WORKERS"
ENV_WORKER_INDEX: Final = "KERASOP_WORKER_INDEX"
ENV_COORDINATOR: Final = "KERASOP_COORDINATOR"  # host:port of worker 0

# The server's environment fallbacks for its flags.
ENV_MODEL: Final = "KERASOP_MODEL"
ENV_MODEL_VERSION: Final = "KERASOP_MODEL_VERSION"
ENV_PORT: Final = "KERASOP_PORT"
ENV_ENGINE: Final = "KERASOP_ENGINE"
ENV_ROLLOUT_FILE: Final = "KERASOP_ROLLOUT_FILE"
