"""``kerasop-operator``: run the operator (kopf, standalone) with metrics and a liveness probe.

Configuration (flags win over environment variables; all of them: settings.py):

    --namespace NS (repeatable)   KERASOP_WATCH_NAMESPACES=a,b   default: all namespaces
    --metrics-port N              KERASOP_METRICS_PORT=9090      0 disables /metrics
    --health-port N               KERASOP_HEALTH_PORT=8081       liveness at /healthz, 0 disables
    --log-format json|text        KERASOP_LOG_FORMAT=json
    --verbose                     KERASOP_LOG_LEVEL=debug|info|warning|error
                                  KERASOP_RUNTIME_IMAGE          default trainer/server image
                                  KERASOP_PROGRESS_INTERVAL=10   seconds between progress reads
                                  KERASOP_CLUSTER_DOMAIN=cluster.local
                                  KERASOP_KUEUE=true             read queued jobs' Workloads
                                  KUBECONFIG                     outside a cluster
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping

from pydantic import ValidationError

from .settings import Config


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The settings: the environment, overridden by the command line."""
    p = argparse.ArgumentParser(prog="kerasop-operator", description=__doc__.split("\n")[0])
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="Namespace to watch (repeatable; default: KERASOP_WATCH_NAMESPACES or all).",
    )
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--health-port", type=int, default=None)
    p.add_argument("--log-format", choices=["json", "text"], default=None)
    p.add_argument("--verbose", "-v", action="store_true")
    args = p.parse_args(argv)
    try:
        return Config.from_env(
            environ,
            watch_namespaces=tuple(args.namespace) if args.namespace else None,
            metrics_port=args.metrics_port,
            health_port=args.health_port,
            log_format=args.log_format,
            log_level="debug" if args.verbose else None,
        )
    except ValidationError as exc:
        p.error(f"invalid setting: {exc}")


def configure_logging(config: Config) -> None:
    import kopf

    verbose = config.log_level == "debug"
    kopf.configure(
        verbose=verbose,
        quiet=config.log_level in ("warning", "error"),
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
    )
    # Every HTTP request at INFO is noise, and so is kopf's "Handler ... succeeded"
    # line for every watch event (unless --verbose).
    for http_logger in ("httpx", "httpx2"):  # lightkube's HTTP client (name by version)
        logging.getLogger(http_logger).setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    configure_logging(config)
    log = logging.getLogger("kerasop_operator")

    import kopf

    from . import handlers  # registers the handlers
    from . import kube as kube_kinds
    from .controller import Controller
    from .kube import Kube

    # Fail fast with one clear line (the pod restarts until the CRDs exist): with CRD
    # scanning off, kopf only serves the resources it discovers at start-up.
    try:
        kube = Kube.from_environment()
        missing = handlers.missing_crds(kube, config.watch_namespaces)
    except Exception as exc:  # no kubeconfig, API server unreachable, ...
        log.error("cannot reach the Kubernetes API: %s", exc)
        return 1
    if missing:
        log.error(
            "CRDs not installed (%s): kubectl apply -f crds/ (or install the Helm chart) first",
            ", ".join(f"{m}.kerasop.io" for m in missing),
        )
        return 1

    if config.kueue:
        namespace = config.watch_namespaces[0] if config.watch_namespaces else None
        if kube.served(kube_kinds.WORKLOAD, namespace):
            handlers.watch_workloads()
        else:
            log.warning(
                "Kueue support is on but the API server does not serve"
                " workloads.kueue.x-k8s.io: queued jobs report QueueNotServed"
            )

    settings = kopf.OperatorSettings()
    handlers.configure_settings(settings, config)
    controller = Controller(kube, config, handlers.post_event)

    if config.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(config.metrics_port)
        log.info("metrics on :%d/metrics", config.metrics_port)
    namespaces = list(config.watch_namespaces)
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    log.info("watching %s", ", ".join(namespaces) if namespaces else "all namespaces")
    kopf.run(
        registry=kopf.get_default_registry(),
        settings=settings,
        memo=kopf.Memo(controller=controller, periodic=handlers.periodic_work(controller)),
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
