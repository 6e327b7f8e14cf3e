"""``npz``: arrays ``x`` and ``y``, loaded into memory; ``x`` is rows x features, or images
N x H x W [x C] used at their stored size."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from kerasop.events import EXIT_BAD_DATA
from kerasop.spec import DataSpec, ImageSpec
from kerasop.store import InputKind
from kerasop_trainer.data.splits import ArraySplit, Raw
from kerasop_trainer.errors import TrainerError


def read(spec: DataSpec, path: Path, role: str, training: Raw | None = None) -> Raw:
    x, y = _load_arrays(path, role)
    x = _checked(x, y, path, role)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 2:
        return Raw(
            kind=InputKind.TABULAR,
            shape=(x.shape[1],),
            examples=ArraySplit(y=y, x=x),
            where=str(path),
        )
    return _images(spec, x, y, path)


def _load_arrays(path: Path, role: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` and ``y`` of the archive, or a TrainerError saying what is wrong."""
    if not path.is_file():
        raise TrainerError(f"{role} data file {path} does not exist", EXIT_BAD_DATA)
    if path.stat().st_size == 0:
        raise TrainerError(f"{role} data file {path} is empty", EXIT_BAD_DATA)
    if not zipfile.is_zipfile(path):
        raise TrainerError(
            f"{path} is not a readable .npz file (not a zip archive of arrays x and y)",
            EXIT_BAD_DATA,
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise TrainerError(
                    f"{path} lacks array(s) {', '.join(missing)} (has: {', '.join(sorted(keys))})",
                    EXIT_BAD_DATA,
                )
            x = archive["x"]
            y = archive["y"]
    except TrainerError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise TrainerError(
                f"{path}: object (pickled) arrays are not accepted; store numbers or strings",
                EXIT_BAD_DATA,
            ) from None
        raise TrainerError(f"{path} is not a readable .npz file: {exc}", EXIT_BAD_DATA) from None
    except Exception as exc:
        raise TrainerError(f"{path} is not a readable .npz file: {exc}", EXIT_BAD_DATA) from None
    return x, y


def _checked(x: np.ndarray, y: np.ndarray, path: Path, role: str) -> np.ndarray:
    """``x`` as float32 once both arrays are known to fit together; raises otherwise."""
    if x.shape[:1] != y.shape[:1] or x.ndim == 0 or y.ndim == 0:
        raise TrainerError(
            f"{path}: x and y must have the same number of rows (x {x.shape}, y {y.shape})",
            EXIT_BAD_DATA,
        )
    if len(x) == 0:
        raise TrainerError(f"{role} data file {path} has no rows", EXIT_BAD_DATA)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TrainerError(f"{path}: x must be numeric, not {x.dtype}", EXIT_BAD_DATA)
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise TrainerError(f"{path}: x has a non-finite value in row {row}", EXIT_BAD_DATA)
    if y.ndim > 2:
        raise TrainerError(f"{path}: y must be 1-D (or 2-D one-hot), not {y.shape}", EXIT_BAD_DATA)
    if y.dtype.kind not in "biufU":
        raise TrainerError(f"{path}: y must hold numbers or strings, not {y.dtype}", EXIT_BAD_DATA)
    return x


def _images(spec: DataSpec, x: np.ndarray, y: np.ndarray, path: Path) -> Raw:
    """N x H x W [x C] arrays: images used at their stored size."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise TrainerError(
            f"{path}: x must be rows x features, or images N x H x W [x 1|3]; got {x.shape}",
            EXIT_BAD_DATA,
        )
    h, w, c = (int(d) for d in x.shape[1:])
    if spec.image is not None and (spec.image.height, spec.image.width, spec.image.channels) != (
        h,
        w,
        c,
    ):
        raise TrainerError(
            f"{path}: images are {h}x{w}x{c} but data.image asks for "
            f"{spec.image.height}x{spec.image.width}x{spec.image.channels}; "
            "npz images are used as stored (remove data.image or resize the arrays)",
            EXIT_BAD_DATA,
        )
    return Raw(
        kind=InputKind.IMAGE,
        shape=(h, w, c),
        examples=ArraySplit(y=y, x=x),
        where=str(path),
        image=ImageSpec(height=h, width=w, channels=c),
    )
