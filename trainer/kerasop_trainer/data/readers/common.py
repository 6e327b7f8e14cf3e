"""Reading a CSV file with the csv module, as the csv, text and imageCsv readers do."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from kerasop.events import EXIT_BAD_DATA
from kerasop_trainer.errors import TrainerError


def read_table(path: Path, role: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and each row's line number; checks the file's shape."""
    if not path.exists():
        raise TrainerError(f"{role} data file {path} does not exist", EXIT_BAD_DATA)
    if path.is_dir():
        raise TrainerError(f"{role} data {path} is a folder, expected a CSV file", EXIT_BAD_DATA)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header: list[str] | None = None
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if header is None:
                    header = [c.strip() for c in row]
                    continue
                if len(row) != len(header):
                    raise TrainerError(
                        f"{path}: line {reader.line_num} has {len(row)} fields, "
                        f"the header has {len(header)}",
                        EXIT_BAD_DATA,
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise TrainerError(f"{path} is not a UTF-8 text CSV file ({exc})", EXIT_BAD_DATA) from None
    except csv.Error as exc:
        raise TrainerError(f"{path} is not a readable CSV file: {exc}", EXIT_BAD_DATA) from None
    if header is None:
        raise TrainerError(f"{role} data file {path} is empty", EXIT_BAD_DATA)
    if not rows:
        raise TrainerError(f"{role} data file {path} has a header but no data rows", EXIT_BAD_DATA)
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise TrainerError(f"{path}: duplicate column names: {', '.join(dupes)}", EXIT_BAD_DATA)
    return header, rows, lines


def column(header: list[str], name: str, path: Path, what: str) -> int:
    try:
        return header.index(name)
    except ValueError:
        shown = ", ".join(header[:10]) + (", ..." if len(header) > 10 else "")
        raise TrainerError(
            f"{path} has no {what} column '{name}' (columns: {shown})", EXIT_BAD_DATA
        ) from None


def labels_of(
    table: np.ndarray, label_idx: int, label: str, lines: list[int], path: Path
) -> np.ndarray:
    """The label column, stripped; an empty label is an error naming its line."""
    labels = np.char.strip(table[:, label_idx])
    empty = np.flatnonzero(labels == "")
    if empty.size:
        raise TrainerError(
            f"{path}: empty label in column '{label}' at line {lines[empty[0]]}", EXIT_BAD_DATA
        )
    return labels
