"""Where a data path's bytes are: under the data volume, or, for a URI (``s3://``, ``gs://``,
``https://``), a copy staged on local disk first so that every reader works unchanged."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kerasop.objstore import ObjectStore, ObjectStoreError
from kerasop.spec import ObjectStoreSpec, uri_scheme
from kerasop_trainer.errors import store_error

# Staged copies (env): an emptyDir in a pod, so a retried container finds them again.
CACHE_ENV = "KERASOP_DATA_CACHE"
# Objects downloaded at once: an image CSV may name thousands, each a round trip or three.
STAGING_THREADS = 8


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "kerasop-data")


def data_file(data_root: Path, path: str, store: ObjectStoreSpec | None = None) -> Path:
    """The local file or folder of a data path (``data.path``, ``data.validationPath``);
    ``store``: how to reach a URI's store (``data.store``)."""
    (local,) = data_files(data_root, [path], store)
    return local


def data_files(
    base: Path, paths: Sequence[str], store: ObjectStoreSpec | None = None
) -> list[Path]:
    """The local file or folder of each path: relative ones under ``base``, URIs staged
    into :func:`cache_dir` through one store client per scheme, a few at a time."""
    schemes = {s for p in paths if (s := uri_scheme(p)) is not None}
    stores = {s: ObjectStore(store, "DATA", scheme=s) for s in schemes}
    cache = cache_dir()

    def local(path: str) -> Path:
        scheme = uri_scheme(path)
        return base / path if scheme is None else stores[scheme].stage(path, cache)

    if not stores:
        return [base / p for p in paths]
    pool = ThreadPoolExecutor(STAGING_THREADS, thread_name_prefix="data-staging")
    try:
        return list(pool.map(local, paths))
    except ObjectStoreError as exc:
        raise store_error(exc) from None
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure, download no more
