"""Object storage: data read from, and model stores kept in, a bucket (docs/model-store.md,
"Object storage").

The I/O goes through fsspec: s3fs (botocore's signing, retries and endpoint handling) for
``s3://``, gcsfs (GCS's JSON API with google-auth's credentials) for ``gs://``, the same API for
``https://``; nothing here signs a request by hand. What this module adds is the model-store
contract on top of a bucket, where no rename exists:

    <prefix>/<model>/.claims/<N>          an empty object; whoever creates it (a conditional
                                          put: If-None-Match: * on S3, ifGenerationMatch=0 on
                                          GCS) owns version number N
    <prefix>/<model>/<N>/<files>          the version's files, uploaded after the claim
    <prefix>/<model>/<N>/manifest.json    written LAST: every file with its size and SHA-256.
                                          A version without its manifest does not exist.
    <prefix>/<model>/.checkpoints/<job-id>/   a job's checkpoint (state.json written last)

Servers download a version into a hidden folder on local disk, check every size and SHA-256
against the manifest, and only then rename it into place (:meth:`ObjectModelStore.download`).

Credentials: ``store.secretName`` names a Secret whose keys the operator hands to the pods as
env (``KERASOP_<ROLE>_AWS_ACCESS_KEY_ID`` ..., role ``DATA`` or ``MODELS``, so data and models
may live in different accounts); without them botocore's default chain applies (plain
``AWS_*`` env, IRSA, instance roles). For ``gs://``, ``store.gcsSecretName``'s ``key.json`` is
mounted as a file that ``KERASOP_<ROLE>_GCS_KEY_FILE`` names; without it google-auth's default
chain applies (``GOOGLE_APPLICATION_CREDENTIALS``, workload identity). Errors name the bucket
and the Secret, never a key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from kerasop.spec import ObjectStoreSpec, uri_scheme

MANIFEST_FILE = "manifest.json"
CLAIMS_DIR = ".claims"
CHECKPOINTS_DIR = ".checkpoints"
ROLES = ("DATA", "MODELS")
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
GCS_KEY = "key.json"  # the key of store.gcsSecretName holding the credentials file
# How long a call keeps retrying a store that does not answer (env: seconds).
RETRY_ENV = "KERASOP_STORE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0

T = TypeVar("T")


class ObjectStoreError(Exception):
    """A store failure a user can act on; ``reason`` is its CamelCase name."""

    reason = "ObjectStoreError"


class StorageAccessDenied(ObjectStoreError):
    reason = "StorageAccessDenied"

    def __init__(self, bucket: str, secret: str | None) -> None:
        who = f"the credentials of Secret {secret!r}" if secret else "the pod's default credentials"
        super().__init__(f"access to bucket {bucket!r} denied with {who}")


class DataNotFound(ObjectStoreError):
    reason = "DataNotFound"

    def __init__(self, uri: str) -> None:
        super().__init__(f"{uri}: no such object or prefix")


class ChecksumMismatch(ObjectStoreError):
    reason = "ChecksumMismatch"


class StoreUnreachable(ObjectStoreError):
    reason = "StoreUnreachable"


def credential_env(role: str) -> dict[str, str]:
    """Env variable of each credential key for ``role`` (``DATA`` or ``MODELS``)."""
    assert role in ROLES, role
    return {key: f"KERASOP_{role}_{key}" for key in CREDENTIAL_KEYS}


def gcs_key_env(role: str) -> str:
    """Env variable naming the GCS credentials file for ``role`` (``DATA`` or ``MODELS``)."""
    assert role in ROLES, role
    return f"KERASOP_{role}_GCS_KEY_FILE"


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ObjectStore:
    """One store (its endpoint and credentials) as an fsspec filesystem whose errors are
    :class:`ObjectStoreError` and whose calls retry a store that briefly does not answer."""

    def __init__(
        self,
        spec: ObjectStoreSpec | None,
        role: str,
        scheme: str = "s3",
        retry_seconds: float | None = None,
    ) -> None:
        self.spec = spec or ObjectStoreSpec()
        self.role = role
        self.scheme = scheme
        self.secret = self.spec.gcs_secret_name if scheme == "gs" else self.spec.secret_name
        self.retry_seconds = (
            float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_SECONDS))
            if retry_seconds is None
            else retry_seconds
        )

    @functools.cached_property
    def fs(self) -> Any:
        """The filesystem, built on first use: inside :meth:`call`, so credentials that do not
        load fail as :class:`StorageAccessDenied` naming the bucket."""
        import fsspec

        if self.scheme in ("http", "https"):
            return fsspec.filesystem(self.scheme)
        if self.scheme == "gs":
            return self._gcs_filesystem()
        env = {k: os.environ.get(name) for k, name in credential_env(self.role).items()}
        options: dict[str, Any] = {
            "skip_instance_cache": True,
            "use_listings_cache": False,
            "config_kwargs": {
                "s3": {"addressing_style": "path" if self.spec.path_style else "auto"},
                "retries": {"max_attempts": 3, "mode": "standard"},
                "connect_timeout": 5,
                "read_timeout": 60,
            },
            "client_kwargs": {"region_name": self.spec.region} if self.spec.region else {},
        }
        if self.spec.endpoint:
            options["endpoint_url"] = self.spec.endpoint
        if env["AWS_ACCESS_KEY_ID"]:
            options["key"] = env["AWS_ACCESS_KEY_ID"]
            options["secret"] = env["AWS_SECRET_ACCESS_KEY"]
            if env["AWS_SESSION_TOKEN"]:
                options["token"] = env["AWS_SESSION_TOKEN"]
        return fsspec.filesystem("s3", **options)

    def _gcs_filesystem(self) -> Any:
        # gcsfs' core filesystem, not the ExtendedGcsFileSystem that newer gcsfs registers for
        # gs://: that one first asks the Storage Control gRPC API for each bucket's layout (for
        # zonal buckets), which GCS emulators lack, and each call then waits 60 s for it.
        from gcsfs.core import GCSFileSystem

        token: Any = None  # google-auth's default chain, then anonymous (emulators)
        key_file = os.environ.get(gcs_key_env(self.role))
        if key_file:
            import google.auth

            try:
                token, _ = google.auth.load_credentials_from_file(
                    key_file, scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
                )
            except Exception:  # google-auth's message may quote the file: never shown
                raise PermissionError from None
        return GCSFileSystem(
            token=token,
            endpoint_url=self.spec.endpoint.rstrip("/") if self.spec.endpoint else None,
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def call(self, uri: str, fn: Callable[[], T]) -> T:
        """``fn()``, its errors turned into :class:`ObjectStoreError` (naming ``uri``'s
        bucket), retried with backoff while the store does not answer."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            try:
                return fn()
            except (ObjectStoreError, FileExistsError):
                raise
            except PermissionError:
                raise StorageAccessDenied(split_uri(uri)[0], self.secret) from None
            except FileNotFoundError:
                raise DataNotFound(uri) from None
            except Exception as exc:
                code = _error_code(exc)
                if code in _DENIED:
                    raise StorageAccessDenied(split_uri(uri)[0], self.secret) from None
                if code in ("PreconditionFailed", "412"):  # If-None-Match: * on a taken key
                    raise FileExistsError(uri) from None
                if code and code not in _TRANSIENT and not code.startswith("5"):
                    raise ObjectStoreError(
                        f"{uri}: the store refused the request ({code})"
                    ) from None
                if time.monotonic() + delay > deadline:
                    raise StoreUnreachable(
                        f"{uri}: the store did not answer for {self.retry_seconds:.0f}s"
                        f" ({type(exc).__name__})"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ---- files -----------------------------------------------------------------------------

    def exists(self, uri: str) -> bool:
        return bool(self.call(uri, lambda: self.fs.exists(uri)))

    def read_bytes(self, uri: str) -> bytes:
        return bytes(self.call(uri, lambda: self.fs.cat_file(uri)))

    def write_bytes(self, uri: str, data: bytes, *, create: bool = False) -> None:
        """Put ``data``; ``create``: only if no object has the key (If-None-Match: *),
        else ``FileExistsError``."""
        mode = "create" if create else "overwrite"
        self.call(uri, lambda: self.fs.pipe_file(uri, data, mode=mode))

    def upload(self, path: Path, uri: str) -> None:
        self.call(uri, lambda: self.fs.put_file(str(path), uri))

    def download(self, uri: str, path: Path) -> None:
        self.call(uri, lambda: self.fs.get_file(uri, str(path)))

    def names(self, uri: str) -> list[str]:
        """Names directly under the prefix ``uri`` ([] when there is none)."""
        try:
            found = self.call(uri, lambda: self.fs.ls(uri.rstrip("/") + "/", detail=False))
        except DataNotFound:
            return []
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in found]

    def delete(self, uri: str) -> None:
        with contextlib.suppress(DataNotFound):
            self.call(uri, lambda: self.fs.rm_file(uri))

    def delete_prefix(self, uri: str) -> None:
        with contextlib.suppress(DataNotFound):
            self.call(uri, lambda: self.fs.rm(uri.rstrip("/"), recursive=True))

    def stage(self, uri: str, cache: Path) -> Path:
        """A local copy of the object or prefix ``uri`` under ``cache`` (kept: a second
        call, or a restarted trainer on the same disk, reuses it). Appears whole or not at all."""
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        dest = cache / hashlib.sha256(uri.encode()).hexdigest()[:16] / name
        if dest.exists():
            return dest
        scheme = uri_scheme(uri)
        is_dir = scheme in ("s3", "gs") and (
            uri.endswith("/") or self.call(uri, lambda: self.fs.isdir(uri))
        )
        if not is_dir and not self.exists(uri):
            raise DataNotFound(uri)
        partial = dest.parent / f".partial-{uuid.uuid4().hex}"
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            if is_dir:
                files = self.call(uri, lambda: self.fs.find(uri.rstrip("/") + "/"))
                if not files:
                    raise DataNotFound(uri)
                base = split_uri(uri)[1].rstrip("/") + "/"
                for key in files:
                    rel = str(key).split("/", 1)[1].removeprefix(base)
                    (partial / rel).parent.mkdir(parents=True, exist_ok=True)
                    self.download(f"{scheme}://{key}", partial / rel)
            else:
                self.download(uri, partial)
            os.replace(partial, dest)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
            if partial.is_file():
                partial.unlink()
        return dest


_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "401", "403"}
_TRANSIENT = {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "Throttling"}


def _error_code(exc: BaseException) -> str:
    """The S3 error code of botocore's ClientError, raised as is or as the cause of the
    error s3fs raises (s3fs maps only some codes to Python's exceptions); the HTTP status of
    gcsfs' HttpError, and 403 for the bare OSError("Forbidden: ...") gcsfs raises for it."""
    for err in (exc, exc.__cause__):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
        if type(err).__module__.startswith("gcsfs"):
            return str(getattr(err, "code", None) or "")
    if type(exc) is OSError and str(exc).startswith("Forbidden"):
        return "403"
    return ""


class ObjectModelStore:
    """The model store in a bucket: ``<uri>/<model>/<version>/`` (module docstring)."""

    def __init__(self, uri: str, store: ObjectStore) -> None:
        self.uri = uri.rstrip("/")
        self.store = store

    @classmethod
    def open(
        cls, uri: str, spec: ObjectStoreSpec | None, retry_seconds: float | None = None
    ) -> ObjectModelStore:
        """The model store at ``uri``, through a client of its scheme (``s3``, ``gs``)."""
        scheme = uri.split("://", 1)[0]
        return cls(uri, ObjectStore(spec, "MODELS", scheme=scheme, retry_seconds=retry_seconds))

    def model_uri(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def version_uri(self, name: str, version: int) -> str:
        return f"{self.model_uri(name)}/{version}"

    def checkpoint_uri(self, name: str, job_id: str) -> str:
        return f"{self.model_uri(name)}/{CHECKPOINTS_DIR}/{job_id}"

    def versions(self, name: str) -> list[int]:
        """Published versions (those with a manifest), ascending."""
        numbered = sorted(int(n) for n in self.store.names(self.model_uri(name)) if n.isdigit())
        return [
            v for v in numbered if self.store.exists(f"{self.version_uri(name, v)}/{MANIFEST_FILE}")
        ]

    def latest(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def manifest(self, name: str, version: int) -> dict[str, Any]:
        uri = f"{self.version_uri(name, version)}/{MANIFEST_FILE}"
        return dict(json.loads(self.store.read_bytes(uri)))

    def _claim(self, name: str) -> int:
        """The next version number, owned by this writer (a conditional put of its claim)."""
        claims = f"{self.model_uri(name)}/{CLAIMS_DIR}"
        taken = [int(n) for n in self.store.names(claims) if n.isdigit()]
        taken += [int(n) for n in self.store.names(self.model_uri(name)) if n.isdigit()]
        version = max(taken, default=0) + 1
        while True:
            try:
                self.store.write_bytes(f"{claims}/{version}", b"", create=True)
                return version
            except FileExistsError:
                version += 1

    def publish(self, name: str, local: Path) -> int:
        """Upload the version folder ``local`` as the next version; the manifest last."""
        files = sorted(p for p in local.rglob("*") if p.is_file())
        entries = [
            {"path": p.relative_to(local).as_posix(), "size": p.stat().st_size, "sha256": ""}
            for p in files
        ]
        for entry, path in zip(entries, files, strict=True):
            entry["sha256"] = sha256_file(path)
        version = self._claim(name)
        base = self.version_uri(name, version)
        for entry, path in zip(entries, files, strict=True):
            self.store.upload(path, f"{base}/{entry['path']}")
        manifest = {"version": version, "files": entries}
        self.store.write_bytes(
            f"{base}/{MANIFEST_FILE}", json.dumps(manifest, indent=2).encode(), create=True
        )
        return version

    def download(self, name: str, version: int, dest: Path) -> Path:
        """Version ``version`` into the folder ``dest`` (which appears only once every file
        matches the manifest); ``ChecksumMismatch`` when one does not."""
        if dest.is_dir():
            return dest
        manifest = self.manifest(name, version)
        base = self.version_uri(name, version)
        partial = dest.parent / f".partial-{dest.name}-{uuid.uuid4().hex}"
        try:
            for entry in manifest["files"]:
                path = partial / entry["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                self.store.download(f"{base}/{entry['path']}", path)
                if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
                    raise ChecksumMismatch(
                        f"{base}/{entry['path']}: size or SHA-256 differs from the manifest;"
                        " the version is not loaded"
                    )
            (partial / MANIFEST_FILE).write_text(json.dumps(manifest))
            try:
                os.replace(partial, dest)
            except OSError:  # another pod sharing a node-local cache was quicker
                if not dest.is_dir():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return dest


@contextlib.contextmanager
def scratch(parent: Path) -> Iterator[Path]:
    """A fresh folder under ``parent``, removed after the block."""
    path = parent / f".scratch-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
