"""KerasTrainingJob: spec -> desired children, observed children -> status.

Pure functions only (no API calls): the controller reads the cluster, calls
these, and writes the results. Modules: ``names`` (names, labels, constants),
``children`` (desired children, Job drift), ``observed`` (the Job and its pods),
``logs`` (progress, results and failures from the trainer's events),
``queueing`` (Kueue's Workload -> where a queued job stands),
``status`` (observed state -> status), ``events`` (phase-change Events), ``tuning``
(a search's pods, status and per-trial Events).

Children of a job ``<job>`` in its namespace:

- ``batch/v1 Job <job>-trainer``: one pod per worker; Indexed with a headless
  Service when ``spec.workers > 1``.
- ``v1 Service <job>-workers`` (workers > 1, or tuning.parallelism > 1): stable DNS
  names ``<job>-trainer-<i>.<job>-workers`` for the JAX coordinator or keras-tuner's
  chief (a search's Job has one Indexed pod per trial in flight, the chief among them).
- ``v1 PersistentVolumeClaim <job>-models`` when ``spec.output.storage.size`` is
  set: owned by the job only when ``retain`` is false.
- ``v1 ServiceAccount kerasop-trainer`` (shared: each user job is a non-controller owner) when the job does
  not name its own service account.
"""

from .children import (
    TrainingChildren,
    desired_children,
    job_is_idle_suspended,
    job_patched_fields,
    service_account,
    template_drift,
)
from .events import phase_event, phase_events, queue_event
from .logs import failure_info, progress_from_log
from .names import (
    CONTAINER,
    DEFAULT_SERVICE_ACCOUNT,
    JOB_MUTABLE_FIELDS,
    KIND,
    PLURAL,
    TERMINAL_PHASES,
    claim_name_of,
    parse,
    trainer_job_name,
)
from .observed import job_pods, worker0_pod
from .queueing import (
    JOB_UID_LABEL,
    WORKLOAD_GROUP,
    WORKLOAD_VERSION,
    ObservedQueue,
    QueueState,
    queue_state,
    workload_active_patch,
)
from .status import ObservedTraining, pod_stuck_detail, training_status
from .tuning import trial_event

__all__ = [
    "CONTAINER",
    "DEFAULT_SERVICE_ACCOUNT",
    "JOB_MUTABLE_FIELDS",
    "JOB_UID_LABEL",
    "KIND",
    "PLURAL",
    "TERMINAL_PHASES",
    "WORKLOAD_GROUP",
    "WORKLOAD_VERSION",
    "ObservedQueue",
    "ObservedTraining",
    "QueueState",
    "TrainingChildren",
    "claim_name_of",
    "desired_children",
    "failure_info",
    "job_is_idle_suspended",
    "job_patched_fields",
    "job_pods",
    "parse",
    "phase_event",
    "phase_events",
    "pod_stuck_detail",
    "progress_from_log",
    "queue_event",
    "queue_state",
    "service_account",
    "template_drift",
    "trainer_job_name",
    "training_status",
    "trial_event",
    "worker0_pod",
    "workload_active_patch",
]
