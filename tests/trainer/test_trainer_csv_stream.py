"""Streamed all-numeric CSVs: real files, real ``tf.data``, checked against ``np.loadtxt``.

Small block and window sizes make a few hundred rows span many block files.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasop.spec import DataSpec
from kerasop_trainer.data import load_data, pipeline
from kerasop_trainer.data.readers import csv_stream
from kerasop_trainer.errors import TrainerError

ROWS, FEATURES = 500, 6


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    # 64 lines per block (the minimum), windows of 100 rows: many of both.
    monkeypatch.setattr(csv_stream, "STREAM_BLOCK_BYTES", 1)
    monkeypatch.setattr(csv_stream, "SHUFFLE_WINDOW_ROWS", 100)


def write_table(path, rows: int = ROWS, seed: int = 0):
    """A numeric CSV whose first feature is the row number (rows are then told apart)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(3, 2, size=(rows, FEATURES)).round(3)
    x[:, 0] = np.arange(rows)
    y = (x[:, 1] > 3).astype(int)
    header = ",".join([f"f{i}" for i in range(FEATURES)] + ["label"])
    np.savetxt(path, np.column_stack([x, y]), fmt="%g", delimiter=",", header=header, comments="")
    return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)


def load(tmp_path, seed=3, **kw):
    spec = DataSpec.model_validate({"format": "csv", "path": "t.csv", **kw})
    return load_data(spec, tmp_path, "binary_crossentropy", seed=seed)


def rows_of(data, split, **kw):
    """Every (features, label) the split's dataset yields, in order."""
    xs, ys = [], []
    for x, y in pipeline.dataset(data, split, 32, **kw):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_streamed_split_yields_exactly_its_rows(tmp_path):
    table = write_table(tmp_path / "t.csv")
    d = load(tmp_path, validationSplit=0.2)
    assert d.train.stream is not None and d.train.stream.blocks == 8  # 500 rows / 64
    assert (len(d.train), len(d.validation)) == (400, 100)

    train_x, train_y = rows_of(d, d.train, shuffle=True, seed=5)
    val_x, val_y = rows_of(d, d.validation)
    train_ids, val_ids = train_x[:, 0].astype(int), val_x[:, 0].astype(int)
    assert len(set(train_ids)) == 400 and len(set(val_ids)) == 100
    assert not set(train_ids) & set(val_ids)  # validation rows are never trained on
    assert sorted([*train_ids, *val_ids]) == list(range(ROWS))
    # Values (and labels joined by row number) are the file's.
    assert np.array_equal(train_x, table[train_ids, :FEATURES])
    assert np.array_equal(train_y[:, 0], table[train_ids, FEATURES])
    assert np.array_equal(val_x, table[val_ids, :FEATURES])
    assert np.array_equal(val_y[:, 0], table[val_ids, FEATURES])
    assert list(val_ids) == sorted(val_ids)  # no shuffle: file order
    assert list(train_ids) != sorted(train_ids)  # shuffled across blocks and windows
    # x (materialized) is the same rows as the dataset's, and the split is seeded.
    assert np.array_equal(d.validation.x, val_x)
    assert np.array_equal(load(tmp_path, validationSplit=0.2).validation.x, val_x)
    assert not np.array_equal(load(tmp_path, seed=4, validationSplit=0.2).validation.x, val_x)
    # Each epoch another order, the same rows.
    ds = pipeline.dataset(d, d.train, 32, shuffle=True, seed=5)
    epochs = [np.concatenate([x.numpy()[:, 0] for x, _ in ds]) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and list(epochs[0]) != list(epochs[1])
    assert ds.cardinality().numpy() == 13  # 400 / 32, last batch partial


def test_statistics_are_numpys_over_the_training_rows(tmp_path):
    table = write_table(tmp_path / "t.csv")
    d = load(tmp_path, validationSplit=0.3)
    x = table[d.train.rows, :FEATURES].astype(np.float64)
    assert d.table.standardize and d.table.feature_mean.dtype == np.float64
    assert np.allclose(d.table.feature_mean, x.mean(axis=0), rtol=1e-12, atol=1e-9)
    assert np.allclose(d.table.feature_variance, x.var(axis=0), rtol=1e-10, atol=1e-9)


def test_shards_partition_the_training_rows(tmp_path):
    table = write_table(tmp_path / "t.csv")
    d = load(tmp_path, validationSplit=0.2)
    parts = [pipeline.shard(d, i, 3, seed=1) for i in range(3)]
    got = []
    for part in parts:
        x, y = rows_of(part, part.train, shuffle=True, seed=2, drop_remainder=True)
        assert len(x) == 133 // 32 * 32  # every worker the same number of full batches
        got.append(part.train.rows)
        ids = x[:, 0].astype(int)
        assert set(ids) <= set(part.train.rows)
        assert np.array_equal(y[:, 0], table[ids, FEATURES])
    rows = np.concatenate(got)
    assert len(rows) == len(set(rows)) == 399  # disjoint, 400 // 3 each
    assert set(rows) <= set(d.train.rows)


def test_validation_file_streams_too(tmp_path):
    write_table(tmp_path / "t.csv")
    val = write_table(tmp_path / "v.csv", rows=70, seed=1)
    d = load(tmp_path, validationPath="v.csv")
    assert d.validation.stream is not None and d.validation.stream is not d.train.stream
    x, y = rows_of(d, d.validation)
    assert np.array_equal(x, val[:, :FEATURES]) and np.array_equal(y[:, 0], val[:, FEATURES])


def test_bad_value_deep_in_a_big_file_names_column_and_line(tmp_path):
    write_table(tmp_path / "t.csv", rows=2000)
    lines = (tmp_path / "t.csv").read_text().splitlines()
    fields = lines[1800].split(",")
    fields[3] = "12..5"
    lines[1800] = ",".join(fields)  # data row 1800, line 1801
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        TrainerError, match=r"column 'f3' is not numeric: value '12\.\.5' at line 1801"
    ):
        load(tmp_path)
    lines[1800] = lines[1800].replace("12..5", "inf")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainerError, match="column 'f3' has a non-finite value 'inf' at line 1801"):
        load(tmp_path)


def test_scratch_files_go_with_the_data(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(csv_stream.tempfile, "tempdir", None)  # re-read TMPDIR
    write_table(tmp_path / "t.csv")
    d = load(tmp_path, validationSplit=0.2)
    folder = d.train.stream.folder
    assert folder.parent == scratch and len(list(folder.iterdir())) == 8
    del d
    import gc

    gc.collect()
    assert not folder.exists()


def test_unwritable_scratch_folder_is_named(tmp_path, monkeypatch):
    write_table(tmp_path / "t.csv")
    monkeypatch.setattr(csv_stream.tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(TrainerError, match=r"cannot write the CSV's scratch copy under .*missing"):
        load(tmp_path)
