"""KerasModelService: spec (+ followed training job) -> desired children, observed -> status.

Pure functions only (no API calls): the controller reads the cluster, calls
these, and writes the results. Modules: ``names`` (names, labels, constants),
``model`` (which model to serve), ``children`` (desired children),
``observed`` (the server Deployment's rollout), ``status`` (observed state ->
status), ``events`` (phase and served-version Events).

Children of a service ``<svc>`` in its namespace:

- ``apps/v1 Deployment <svc>-server`` running ``kerasop-serve`` on port 8080,
  pinned to one model version (a new version = a rolling update);
- ``v1 Service <svc>``: port 80 (``http``) -> 8080;
- ``autoscaling/v2 HorizontalPodAutoscaler <svc>`` when ``spec.autoscaling``;
- ``policy/v1 PodDisruptionBudget <svc>`` (minAvailable 1) when more than one
  server pod is wanted;
- ``v1 ConfigMap <svc>-rollout`` with spec.rollout: the rollout plan (rollout.py)
  the server pods poll, so canary steps and promotions need no pod restart; the
  server pods are annotated with the plan's digest when it changes (``plan_nudges``),
  which makes the kubelet deliver it at once.
"""

from .children import ServingChildren, desired_children, plan_nudges
from .events import phase_event
from .model import ModelRef, Waiting, resolve_model
from .names import (
    CONTAINER,
    DEFAULT_SERVICE_ACCOUNT,
    KIND,
    PLURAL,
    PORT,
    deployment_name,
    parse,
    rollout_config_name,
    selector_string,
)
from .status import STORE_CONDITION, service_status

__all__ = [
    "CONTAINER",
    "DEFAULT_SERVICE_ACCOUNT",
    "KIND",
    "PLURAL",
    "PORT",
    "STORE_CONDITION",
    "ModelRef",
    "ServingChildren",
    "Waiting",
    "deployment_name",
    "desired_children",
    "parse",
    "phase_event",
    "plan_nudges",
    "resolve_model",
    "rollout_config_name",
    "selector_string",
    "service_status",
]
