"""``kerasop-serve``: serve one model of the model store over HTTP (and gRPC).

    kerasop-serve --store-root DIR --model NAME [--version N] [--host 0.0.0.0] [--port 8080]
                  [--max-batch-size 32] [--batch-timeout-ms 2] [--max-request-bytes N]
                  [--grpc-port 8081 (0: off)]
                  [--poll-seconds 2] [--engine auto|keras|onnx] [--threads N]

Without ``--version`` it serves the latest version and picks up new ones by
polling the store. Env fallbacks: KERASOP_STORE_ROOT, KERASOP_MODEL,
KERASOP_MODEL_VERSION, KERASOP_PORT, KERASOP_GRPC_PORT (and KERASOP_ENGINE). See
docs/serving.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kerasop import contracts
from kerasop.spec import ObjectStoreSpec, OutputSpec

from .config import (
    ServerConfig,
)
from .mirror import mirror_root

log = logging.getLogger("kerasop_server")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kerasop-serve", description=__doc__.split("\n")[0])
    p.add_argument(
        "--store-root",
        default=os.environ.get(contracts.ENV_STORE_ROOT, contracts.STORE_ROOT),
        help=f"model store root (env {contracts.ENV_STORE_ROOT}, default {contracts.STORE_ROOT})",
    )
    p.add_argument(
        "--model",
        default=os.environ.get(contracts.ENV_MODEL) or None,
        help=f"model name in the store (env {contracts.ENV_MODEL})",
    )
    p.add_argument(
        "--version",
        type=_positive_int,
        default=None,
        help=f"pin this version (env {contracts.ENV_MODEL_VERSION}); default: follow the latest",
    )
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"env {contracts.ENV_PORT}, default {contracts.SERVER_PORT}",
    )
    contracts.add_server_flags(p)  # --max-batch-size, ..., --max-request-bytes, --grpc-port
    if os.environ.get(contracts.ENV_GRPC_PORT, "").strip():
        # The env fallback, as for --port; a server that predates the flag ignores it.
        p.set_defaults(grpc_port=os.environ[contracts.ENV_GRPC_PORT].strip())
    p.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="how often the store is checked for a new version",
    )
    p.add_argument(
        "--engine",
        choices=("auto", "keras", "onnx"),
        default=os.environ.get(contracts.ENV_ENGINE, "auto"),
        help="inference engine (auto = ONNX Runtime, Keras if that fails)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads of the engine (0 = its default: one per core)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds in-flight requests get to finish on SIGTERM",
    )
    p.add_argument(
        "--rollout-file",
        default=os.environ.get(contracts.ENV_ROLLOUT_FILE) or None,
        help=f"JSON file with stable/candidate/weight/shadow, polled (env {contracts.ENV_ROLLOUT_FILE})",
    )
    p.add_argument(
        "--store-uri",
        default=os.environ.get(contracts.ENV_STORE_URI) or None,
        help="model store in a bucket (s3:// or gs://bucket/prefix), mirrored into --store-root"
        f" (env {contracts.ENV_STORE_URI})",
    )
    p.add_argument(
        "--store-options",
        default=os.environ.get(contracts.ENV_STORE_OPTIONS) or None,
        help="its endpoint, region, pathStyle, secretName, gcsSecretName as JSON, e.g."
        f" '{{\"pathStyle\": true}}' (env {contracts.ENV_STORE_OPTIONS}); keys:"
        " KERASOP_MODELS_AWS_* env, or the file KERASOP_MODELS_GCS_KEY_FILE names",
    )
    p.add_argument(
        "--store-cache",
        default=os.environ.get(contracts.ENV_STORE_CACHE) or None,
        help="node-local cache folder: the mirror lives there instead of --store-root, so a"
        f" restarted server does not download again (env {contracts.ENV_STORE_CACHE})",
    )
    p.add_argument(
        "--store-unused-seconds",
        type=float,
        default=float(os.environ.get(contracts.ENV_STORE_UNUSED_SECONDS) or 3600),
        help="the mirror deletes versions no server on the node wanted for this long"
        f" (env {contracts.ENV_STORE_UNUSED_SECONDS}, default 3600)",
    )
    p.add_argument("--log-level", default=os.environ.get("KERASOP_LOG_LEVEL", "INFO"))
    p.add_argument("--access-log", action="store_true", help="log every request")
    return p


def parse_args(argv: Sequence[str] | None = None) -> tuple[ServerConfig, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.model:
        parser.error(f"--model is required (or set {contracts.ENV_MODEL})")
    try:
        version = (
            args.version if args.version is not None else _env_int(contracts.ENV_MODEL_VERSION)
        )
        port = (
            args.port
            if args.port is not None
            else (_env_int(contracts.ENV_PORT) or contracts.SERVER_PORT)
        )
        store_root, store_options = args.store_root, None
        if args.store_uri is not None:
            store_options = ObjectStoreSpec.model_validate_json(args.store_options or "{}")
            OutputSpec(uri=args.store_uri)  # the same URI check as the spec's
            if args.store_cache:
                store_root = mirror_root(Path(args.store_cache), args.store_uri)
        config = ServerConfig(
            store_root=store_root,
            store_uri=args.store_uri,
            store_options=store_options,
            store_unused_seconds=args.store_unused_seconds,
            model=args.model,
            version=version,
            host=args.host,
            port=port,
            **contracts.server_flag_values(args),
            poll_seconds=args.poll_seconds,
            engine=args.engine,
            threads=args.threads,
            shutdown_timeout=args.shutdown_timeout,
            rollout_file=args.rollout_file,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return config, args


def main(argv: Sequence[str] | None = None) -> int:
    config, args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import uvloop
    from aiohttp import web

    from .app import create_app

    log.info(
        "serving model %r from %s (%s) on %s:%d (gRPC: %s), engine %s, batches of <= %d rows"
        " / %.1f ms",
        config.model,
        config.store_root,
        f"version {config.version}" if config.version else "latest version",
        config.host,
        config.port,
        f"port {config.grpc_port}" if config.grpc_port else "off",
        config.engine,
        config.max_batch_size,
        config.batch_timeout_ms,
    )
    # uvloop: the event loop REST and gRPC share; grpcio's asyncio server answers about a
    # quarter more calls per second on it than on asyncio's own (docs/performance.md).
    web.run_app(
        create_app(config),
        loop=uvloop.new_event_loop(),
        host=config.host,
        port=config.port,
        shutdown_timeout=config.shutdown_timeout,
        access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
        print=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
