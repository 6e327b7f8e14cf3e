"""``kerasop-operator``: run the operator (kopf, standalone) with metrics and a liveness probe.

Configuration (flags win over environment variables):

    --namespace NS (repeatable)   KERASOP_WATCH_NAMESPACES=a,b   default: all namespaces
    --metrics-port N              KERASOP_METRICS_PORT=9090      0 disables /metrics
    --health-port N               KERASOP_HEALTH_PORT=8081       liveness at /healthz, 0 disables
    --log-format json|text        KERASOP_LOG_FORMAT=json
    --verbose                     KERASOP_LOG_LEVEL=debug|info|warning
                                  KERASOP_RUNTIME_IMAGE          default trainer/server image
                                  KERASOP_PROGRESS_INTERVAL=10   seconds between progress reads
                                  KERASOP_CLUSTER_DOMAIN=cluster.local
                                  KUBECONFIG                     outside a cluster
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kerasop-operator", description=__doc__.split("\n")[0])
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="Namespace to watch (repeatable; default: KERASOP_WATCH_NAMESPACES or all).",
    )
    p.add_argument("--metrics-port", type=int, default=_env_int("KERASOP_METRICS_PORT", 9090))
    p.add_argument("--health-port", type=int, default=_env_int("KERASOP_HEALTH_PORT", 8081))
    p.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=os.environ.get("KERASOP_LOG_FORMAT", "json"),
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=os.environ.get("KERASOP_LOG_LEVEL", "").lower() == "debug",
    )
    args = p.parse_args(argv)
    if args.namespace is None:
        raw = os.environ.get("KERASOP_WATCH_NAMESPACES", "")
        args.namespace = [ns.strip() for ns in raw.split(",") if ns.strip()]
    return args


def configure_logging(log_format: str, verbose: bool) -> None:
    import kopf

    level = os.environ.get("KERASOP_LOG_LEVEL", "").lower()
    kopf.configure(
        verbose=verbose,
        quiet=level in ("warning", "error"),
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    # Every HTTP request at INFO is noise, and so is kopf's "Handler ... succeeded"
    # line for every watch event (unless --verbose).
    for http_logger in ("httpx", "httpx2"):  # lightkube's HTTP client (name by version)
        logging.getLogger(http_logger).setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_format, args.verbose)
    log = logging.getLogger("kerasop_operator")

    import kopf

    from . import handlers  # registers the handlers
    from .controller import Config, Controller
    from .kube import Kube

    # Fail fast with one clear line (the pod restarts until the CRDs exist): with CRD
    # scanning off, kopf only serves the resources it discovers at start-up.
    try:
        kube = Kube.from_environment()
        missing = handlers.missing_crds(kube, args.namespace)
    except Exception as exc:  # no kubeconfig, API server unreachable, ...
        log.error("cannot reach the Kubernetes API: %s", exc)
        return 1
    if missing:
        log.error(
            "CRDs not installed (%s): kubectl apply -f crds/ (or install the Helm chart) first",
            ", ".join(f"{m}.kerasop.io" for m in missing),
        )
        return 1
    handlers.CONTROLLER = Controller(kube, Config.from_env(), handlers.post_event)

    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
        log.info("metrics on :%d/metrics", args.metrics_port)
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    log.info("watching %s", ", ".join(args.namespace) if args.namespace else "all namespaces")
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
