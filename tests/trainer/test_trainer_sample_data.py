"""The sample data generators: deterministic, in the documented shapes."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from kerasop_trainer import sample_data


def test_dense_csv_is_deterministic_and_shaped(tmp_path):
    a = sample_data.write_dense_csv(tmp_path / "a.csv", rows=50, features=784, seed=4)
    b = sample_data.write_dense_csv(tmp_path / "b.csv", rows=50, features=784, seed=4)
    c = sample_data.write_dense_csv(tmp_path / "c.csv", rows=50, features=784, seed=5)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    with open(a, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][-1] == "label" and len(rows[0]) == 785 and len(rows) == 51
    assert {r[-1] for r in rows[1:]} == {"0", "1"}
    values = np.array([r[:-1] for r in rows[1:]], dtype=float)
    assert values.min() >= 0 and values.max() <= 1


def test_image_csv_and_folder(tmp_path):
    csv_path = sample_data.write_image_csv(tmp_path / "shapes", per_class=3, size=16, seed=1)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["label"] for r in rows} == {"circle", "square"}
    for r in rows:
        with Image.open(csv_path.parent / r["path"]) as im:
            assert im.size == (16, 16) and im.mode == "RGB"
    again = sample_data.write_image_csv(tmp_path / "again", per_class=3, size=16, seed=1)
    assert (again.parent / rows[0]["path"]).read_bytes() == (
        csv_path.parent / rows[0]["path"]
    ).read_bytes()

    root = sample_data.write_image_folder(tmp_path / "f", per_class=2, classes=("a", "b", "c"))
    assert sorted(p.name for p in root.iterdir()) == ["a", "b", "c"]
    assert all(len(list((root / c).glob("*.png"))) == 2 for c in "abc")


def test_npz(tmp_path):
    path = sample_data.write_npz(tmp_path / "d.npz", rows=30, features=5, classes=4)
    with np.load(path) as f:
        assert f["x"].shape == (30, 5) and f["x"].dtype == np.float32
        assert f["y"].shape == (30,) and set(f["y"].tolist()) <= {0, 1, 2, 3}
