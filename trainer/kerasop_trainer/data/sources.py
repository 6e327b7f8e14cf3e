"""Where a data path's bytes are: under the data volume, or, for a URI (``s3://``,
``https://``), a copy staged on local disk first so that every reader works unchanged."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kerasop.objstore import ObjectStore, ObjectStoreError
from kerasop.spec import ObjectStoreSpec, uri_scheme
from kerasop_trainer.errors import store_error

# Staged copies (env): an emptyDir in a pod, so a retried container finds them again.
CACHE_ENV = "KERASOP_DATA_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "kerasop-data")


def data_file(data_root: Path, path: str, store: ObjectStoreSpec | None = None) -> Path:
    """The local file or folder of a data path (``data.path``, ``data.validationPath``);
    ``store``: how to reach a URI's store (``data.store``)."""
    if uri_scheme(path) is None:
        return data_root / path
    try:
        return ObjectStore.for_uri(path, store, "DATA").stage(path, cache_dir())
    except ObjectStoreError as exc:
        raise store_error(exc) from None
