"""``imageCsv`` (a CSV of image paths, relative to it or URIs, and labels) and ``imageFolder``
(one subfolder per class).

Image URIs (``s3://bucket/key``, ``gs://bucket/key``, ``https://host/file``) are staged onto
local disk like a URI ``data.path`` (:func:`~kerasop_trainer.data.sources.data_files`,
``data.store``'s credentials), so the checks and the ``tf.data`` pipeline only ever see local
files.

Images are never loaded all at once: only their paths are kept, every file's header is
checked with Pillow up front (so a corrupt file fails the job before training starts), and
``tf.data`` reads, decodes and resizes them per batch
(:func:`~kerasop_trainer.data.pipeline.image_decoder`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kerasop.events import EXIT_BAD_DATA
from kerasop.spec import DATA_URI_SCHEMES, DataSpec, uri_scheme
from kerasop.store import InputKind
from kerasop_trainer.data.readers.common import column, read_table
from kerasop_trainer.data.sources import data_files
from kerasop_trainer.data.splits import ImageFileSplit, Raw
from kerasop_trainer.errors import TrainerError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
# Formats tf.io.decode_image reads (Pillow's names).
DECODABLE_FORMATS = ("PNG", "JPEG", "GIF", "BMP")


def read_image_csv(spec: DataSpec, path: Path, role: str, training: Raw | None = None) -> Raw:
    header, rows, lines = read_table(path, role)
    path_idx = column(header, spec.image_column, path, "image")
    label_idx = column(header, spec.label_column, path, "label")
    images: list[str] = []
    labels: list[str] = []
    for row, line in zip(rows, lines, strict=True):
        image = row[path_idx].strip()
        label = row[label_idx].strip()
        if not image:
            raise TrainerError(f"{path}: empty image path at line {line}", EXIT_BAD_DATA)
        if not label:
            raise TrainerError(f"{path}: empty label at line {line}", EXIT_BAD_DATA)
        scheme = uri_scheme(image)
        if scheme is not None and scheme not in DATA_URI_SCHEMES:
            raise TrainerError(
                f"{path}: image {image} at line {line} is not a supported URI (use"
                " s3://bucket/key, gs://bucket/key, https://host/file, or a path relative to the"
                " CSV)",
                EXIT_BAD_DATA,
            )
        images.append(image)
        labels.append(label)
    return _image_files(spec, path, data_files(path.parent, images, spec.store), labels)


def read_image_folder(spec: DataSpec, path: Path, role: str, training: Raw | None = None) -> Raw:
    if not path.exists():
        raise TrainerError(f"{role} image folder {path} does not exist", EXIT_BAD_DATA)
    if not path.is_dir():
        raise TrainerError(f"{role} data {path} is not a folder", EXIT_BAD_DATA)
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise TrainerError(
            f"{role} image folder {path} has no class subfolders (expected {path}/<class>/*.png)",
            EXIT_BAD_DATA,
        )
    files: list[Path] = []
    labels: list[str] = []
    for cls in classes:
        found = []
        for dirpath, dirnames, filenames in os.walk(path / cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(Path(dirpath) / name)
        if not found:
            raise TrainerError(
                f"class folder {path / cls} has no images ({', '.join(IMAGE_EXTENSIONS)})",
                EXIT_BAD_DATA,
            )
        files.extend(found)
        labels.extend([cls] * len(found))
    return _image_files(spec, path, files, labels, classes)


def _image_files(
    spec: DataSpec,
    path: Path,
    files: list[Path],
    labels: list[str],
    classes: list[str] | None = None,
) -> Raw:
    """Image files (checked to decode) and their labels, read at ``data.image``'s size."""
    _check_images(files)
    image = spec.image_or_default()
    return Raw(
        kind=InputKind.IMAGE,
        shape=(image.height, image.width, image.channels),
        examples=ImageFileSplit(
            y=np.array(labels, dtype=str), paths=np.array([str(f) for f in files], dtype=str)
        ),
        where=str(path),
        image=image,
        classes=classes,
    )


def _check_image(path: Path) -> str | None:
    """None if Pillow can open (and verify) the file as a decodable format, else why not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
    except FileNotFoundError:
        return "file does not exist"
    except IsADirectoryError:
        return "is a folder, not an image"
    except UnidentifiedImageError:
        return "not a readable image (unknown or corrupt format)"
    except Exception as exc:
        return f"corrupt image ({exc})"
    if fmt not in DECODABLE_FORMATS:
        return f"format {fmt} is not supported (use {', '.join(DECODABLE_FORMATS)})"
    return None


def _check_images(files: Sequence[Path]) -> None:
    """Check every image file's header up front; name the first bad file."""
    workers = min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, problem in zip(files, pool.map(_check_image, files), strict=True):
            if problem is not None:
                raise TrainerError(f"image {path}: {problem}", EXIT_BAD_DATA)
