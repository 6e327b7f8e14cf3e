"""One reader per ``data.format``, looked up in :data:`READERS`.

A reader turns one file or folder into a :class:`~kerasop_trainer.data.splits.Raw`: the
examples with their raw labels, checked (a bad file fails the job with ``EXIT_BAD_DATA``
before training starts). The validation data is read by the same reader, which is given
the training read (``training``) for what the two must share. A new format is a module
with a ``read`` function and an entry here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from kerasop.spec import DataFormat, DataSpec
from kerasop_trainer.data.readers import csv, images, npz, text
from kerasop_trainer.data.splits import Raw


class Reader(Protocol):
    def __call__(
        self, spec: DataSpec, path: Path, role: str, training: Raw | None = None
    ) -> Raw: ...


READERS: dict[DataFormat, Reader] = {
    "csv": csv.read,
    "npz": npz.read,
    "text": text.read,
    "imageCsv": images.read_image_csv,
    "imageFolder": images.read_image_folder,
}


def read(spec: DataSpec, path: Path, role: str, training: Raw | None = None) -> Raw:
    """``role`` (training, validation) data at ``path``, read as ``spec.format`` says."""
    return READERS[spec.format](spec, path, role, training)
