"""Data loading: formats, label encodings, validation, and bad data failing fast."""

from __future__ import annotations

import numpy as np
import pytest

from kerasop.events import EXIT_BAD_DATA, EXIT_MODEL_MISMATCH
from kerasop.spec import DataSpec
from kerasop_trainer import sample_data
from kerasop_trainer.data import ImageFileSplit, load_data, pipeline
from kerasop_trainer.errors import TrainerError


def spec(**kw) -> DataSpec:
    return DataSpec.model_validate(kw)


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- csv


def test_csv_binary_with_split(data_root):
    d = load_data(
        spec(format="csv", path="dense.csv", validationSplit=0.2),
        data_root,
        "binary_crossentropy",
        seed=7,
    )
    assert (len(d.train), len(d.validation)) == (1600, 400)
    assert d.input_shape == (784,) and d.input_kind == "tabular"
    assert d.train.x.dtype == np.float32 and d.train.y.shape == (1600, 1)
    assert d.labels.class_names == ["0", "1"] and d.labels.units == 1
    assert d.table.feature_names[:2] == ["f0", "f1"] and "label" not in d.table.feature_names
    again = load_data(
        spec(format="csv", path="dense.csv", validationSplit=0.2),
        data_root,
        "binary_crossentropy",
        seed=7,
    )
    assert np.array_equal(d.validation.x, again.validation.x)  # the split is seeded
    meta = d.input_metadata().to_json_dict()
    assert meta["kind"] == "tabular" and meta["shape"] == [784] and len(meta["featureNames"]) == 784


def test_csv_string_classes_feature_columns_and_validation_file(tmp_path):
    write(tmp_path / "t.csv", "a,b,c,kind\n1,2,3,dog\n4,5,6,cat\n7,8,9,bird\n1,1,1,cat\n")
    write(tmp_path / "v.csv", "c,a,b,kind\n1,2,3,cat\n4,5,6,dog\n7,8,9,bird\n")
    # validation columns in another order: featureColumns picks them by name
    d = load_data(
        spec(
            format="csv",
            path="t.csv",
            validationPath="v.csv",
            labelColumn="kind",
            featureColumns=["a", "c"],
        ),
        tmp_path,
        "sparse_categorical_crossentropy",
    )
    assert d.labels.class_names == ["bird", "cat", "dog"] and d.labels.kind == "multiclass"
    assert d.train.y.tolist() == [2, 1, 0, 1] and d.validation.y.tolist() == [1, 2, 0]
    assert d.train.x.tolist() == [[1, 3], [4, 6], [7, 9], [1, 1]]
    assert d.validation.x.tolist() == [[2, 1], [5, 4], [8, 7]]

    onehot = load_data(
        spec(format="csv", path="t.csv", labelColumn="kind"), tmp_path, "categorical_crossentropy"
    )
    assert onehot.train.y.tolist()[0] == [0, 0, 1] and onehot.validation is None


def test_integer_classes_sort_numerically(tmp_path):
    write(tmp_path / "t.csv", "x,label\n1,10\n2,9\n3,2\n4,10\n")
    d = load_data(spec(format="csv", path="t.csv"), tmp_path, "sparse_categorical_crossentropy")
    assert d.labels.class_names == ["2", "9", "10"] and d.train.y.tolist() == [2, 1, 0, 2]


def test_regression_labels(tmp_path):
    write(tmp_path / "t.csv", "x,label\n1,0.5\n2,1.5\n3,-2\n")
    d = load_data(spec(format="csv", path="t.csv"), tmp_path, "mean_squared_error")
    assert d.labels.kind == "regression" and d.labels.class_names is None
    assert d.train.y.ravel().tolist() == [0.5, 1.5, -2.0]
    write(tmp_path / "bad.csv", "x,label\n1,0.5\n2,high\n")
    with pytest.raises(TrainerError, match="regression labels must be numbers; row 2"):
        load_data(spec(format="csv", path="bad.csv"), tmp_path, "mean_absolute_error")


@pytest.mark.parametrize(
    "fmt, table",
    [
        ("csv", "a,city,label\n1,x,yes\n2,y,\n"),
        ("text", "text,label\ngood film,pos\nbad film, \n"),
    ],
)
def test_an_empty_label_names_its_line(tmp_path, fmt, table):
    write(tmp_path / "t.csv", table)
    with pytest.raises(TrainerError, match="empty label in column 'label' at line 3") as err:
        load_data(spec(format=fmt, path="t.csv"), tmp_path, "binary_crossentropy")
    assert err.value.exit_code == EXIT_BAD_DATA


def test_numeric_csv_fast_reader_matches_the_python_reader(tmp_path, monkeypatch):
    """All-numeric tables go through NumPy's C reader; what comes out is the same."""
    from kerasop_trainer.data.readers import csv_stream

    text = 'a,"b",c,label\n 1.5 ,2,"3",1\n4,-5e-1,6,0\n\n7,8,9,1\n1,1,1,0\n'
    cases = [(write(tmp_path / "t.csv", text), "binary_crossentropy")]
    cases.append(
        (write(tmp_path / "r.csv", text.replace(",1\n4", ",0.25\n4")), "mean_squared_error")
    )
    for path, loss in cases:
        fast = load_data(spec(format="csv", path=path.name, validationSplit=0.25), tmp_path, loss)
        assert csv_stream.read_numeric_csv(spec(format="csv", path=path.name), path) is not None
        with monkeypatch.context() as m:
            m.setattr(csv_stream, "read_numeric_csv", lambda spec, path: None)
            slow = load_data(
                spec(format="csv", path=path.name, validationSplit=0.25), tmp_path, loss
            )
        for split in ("train", "validation"):
            a, b = getattr(fast, split), getattr(slow, split)
            assert a.x.dtype == b.x.dtype == np.float32 and np.array_equal(a.x, b.x)
            assert a.y.dtype == b.y.dtype and np.array_equal(a.y, b.y)
        assert fast.labels == slow.labels and fast.table.feature_names == slow.table.feature_names
        assert np.allclose(fast.table.feature_mean, slow.table.feature_mean)
        assert np.allclose(fast.table.feature_variance, slow.table.feature_variance)
    # A row with an extra field is not silently accepted by the fast reader.
    write(tmp_path / "x.csv", "a,b,label\n1,2,0\n3,4,1,9\n")
    assert "line 3 has 4 fields" in _bad(tmp_path, {"format": "csv", "path": "x.csv"})


# ---------------------------------------------------------------- npz and images


def test_npz_tabular_and_images(tmp_path, data_root):
    d = load_data(
        spec(format="npz", path="blobs.npz"), data_root, "sparse_categorical_crossentropy"
    )
    assert d.input_shape == (12,) and d.labels.class_names == ["0", "1", "2"]
    np.savez(tmp_path / "img.npz", x=np.zeros((6, 8, 8), np.uint8), y=np.array(["a", "b"] * 3))
    d = load_data(spec(format="npz", path="img.npz"), tmp_path, "binary_crossentropy")
    assert d.input_kind == "image" and d.input_shape == (8, 8, 1)
    assert d.input_metadata().to_json_dict()["image"] == {"height": 8, "width": 8, "channels": 1}


def test_image_csv_streams_paths(data_root):
    d = load_data(
        spec(
            format="imageCsv",
            path="shapes/data.csv",
            validationSplit=0.25,
            image={"height": 16, "width": 20},
        ),
        data_root,
        "binary_crossentropy",
    )
    assert isinstance(d.train, ImageFileSplit)  # paths: nothing decoded up front
    assert d.input_shape == (16, 20, 3) and d.labels.class_names == ["circle", "square"]
    batch_x, _ = next(iter(pipeline.dataset(d, d.train, 4)))
    assert tuple(batch_x.shape) == (4, 16, 20, 3) and batch_x.dtype.name == "float32"
    assert float(batch_x.numpy().max()) > 100  # raw 0..255 pixels; preprocessing is in the model


def test_image_folder(data_root):
    d = load_data(spec(format="imageFolder", path="folder"), data_root, "categorical_crossentropy")
    assert d.labels.class_names == ["circle", "square", "triangle"] and len(d.train) == 30
    assert d.output_metadata().to_json_dict() == {
        "kind": "multiclass",
        "shape": [3],
        "classNames": ["circle", "square", "triangle"],
    }


def test_shard_gives_equal_disjoint_parts(data_root):
    d = load_data(spec(format="csv", path="small.csv"), data_root, "binary_crossentropy")
    parts = [pipeline.shard(d, i, 3, seed=1).train for i in range(3)]
    assert {len(p) for p in parts} == {133}
    rows = np.concatenate([p.x for p in parts])
    assert len(np.unique(rows, axis=0)) == 399


# ---------------------------------------------------------------- bad data


def _bad(tmp_path, data: dict, loss="binary_crossentropy", code=EXIT_BAD_DATA):
    with pytest.raises(TrainerError) as info:
        load_data(spec(**data), tmp_path, loss)
    assert info.value.exit_code == code
    return info.value.message


def test_missing_and_empty_files(tmp_path):
    assert "does not exist" in _bad(tmp_path, {"format": "csv", "path": "nope.csv"})
    write(tmp_path / "empty.csv", "")
    assert "is empty" in _bad(tmp_path, {"format": "csv", "path": "empty.csv"})
    write(tmp_path / "header.csv", "a,b,label\n")
    assert "no data rows" in _bad(tmp_path, {"format": "csv", "path": "header.csv"})
    assert "does not exist" in _bad(tmp_path, {"format": "npz", "path": "nope.npz"})
    assert "does not exist" in _bad(tmp_path, {"format": "imageFolder", "path": "nope"})


def test_missing_label_column(tmp_path):
    write(tmp_path / "t.csv", "a,b,target\n1,2,0\n3,4,1\n")
    msg = _bad(tmp_path, {"format": "csv", "path": "t.csv"})
    assert "no label column 'label'" in msg and "a, b, target" in msg


def test_non_numeric_feature_names_column_and_row(tmp_path):
    write(tmp_path / "t.csv", "a,b,label\n1,2,0\n3,4,1\n5,oops,0\n")
    msg = _bad(tmp_path, {"format": "csv", "path": "t.csv"})
    assert "column 'b' is not numeric" in msg and "'oops'" in msg and "line 4" in msg
    write(tmp_path / "n.csv", "a,label\n1,0\nnan,1\n")
    assert "non-finite" in _bad(tmp_path, {"format": "csv", "path": "n.csv"})
    write(tmp_path / "r.csv", "a,b,label\n1,2,0\n3,1\n")
    assert "line 3 has 2 fields" in _bad(tmp_path, {"format": "csv", "path": "r.csv"})


def test_corrupt_and_missing_images_are_named(tmp_path):
    csv_path = sample_data.write_image_csv(tmp_path / "imgs", per_class=2, size=16)
    bad = tmp_path / "imgs" / "images" / "square_001.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    msg = _bad(tmp_path, {"format": "imageCsv", "path": "imgs/data.csv"})
    assert "square_001.png" in msg
    bad.write_bytes(b"not an image at all")
    assert "square_001.png" in _bad(tmp_path, {"format": "imageCsv", "path": "imgs/data.csv"})
    bad.unlink()
    msg = _bad(tmp_path, {"format": "imageCsv", "path": "imgs/data.csv"})
    assert "square_001.png" in msg and "does not exist" in msg
    assert csv_path.exists()


def test_an_image_uri_of_an_unsupported_scheme_is_named_with_its_line(tmp_path):
    write(tmp_path / "uris.csv", "path,label\naz://bkt/a.png,circle\n")
    msg = _bad(tmp_path, {"format": "imageCsv", "path": "uris.csv"})
    assert "az://bkt/a.png" in msg and "line 2" in msg and "not a supported URI" in msg


def test_validation_classes_must_match(tmp_path):
    sample_data.write_image_folder(tmp_path / "train", per_class=2, size=16)
    sample_data.write_image_folder(
        tmp_path / "val", per_class=2, size=16, classes=("circle", "square", "triangle")
    )
    msg = _bad(
        tmp_path,
        {"format": "imageFolder", "path": "train", "validationPath": "val"},
        loss="sparse_categorical_crossentropy",
    )
    assert "different classes" in msg and "triangle" in msg
    write(tmp_path / "t.csv", "a,label\n1,x\n2,y\n")
    write(tmp_path / "v.csv", "a,label\n1,x\n2,z\n")
    msg = _bad(tmp_path, {"format": "csv", "path": "t.csv", "validationPath": "v.csv"})
    assert "classes not in the training data: z" in msg


def test_split_that_leaves_no_rows(tmp_path):
    write(tmp_path / "t.csv", "a,label\n1,0\n2,1\n")
    assert "leaves" in _bad(tmp_path, {"format": "csv", "path": "t.csv", "validationSplit": 0.1})


def test_labels_that_do_not_fit_the_loss(tmp_path):
    write(tmp_path / "t.csv", "a,label\n1,a\n2,b\n3,c\n")
    msg = _bad(tmp_path, {"format": "csv", "path": "t.csv"}, code=EXIT_MODEL_MISMATCH)
    assert "binary_crossentropy needs exactly 2 classes" in msg
    write(tmp_path / "one.csv", "a,label\n1,a\n2,a\n")
    assert "only one class" in _bad(tmp_path, {"format": "csv", "path": "one.csv"})


def test_npz_problems(tmp_path):
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    assert "lacks array(s) x" in _bad(tmp_path, {"format": "npz", "path": "nox.npz"})
    np.savez(tmp_path / "len.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    assert "same number of rows" in _bad(tmp_path, {"format": "npz", "path": "len.npz"})
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}] * 2, dtype=object), y=np.zeros(2))
    assert "pickled" in _bad(tmp_path, {"format": "npz", "path": "obj.npz"})
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert "not a readable .npz" in _bad(tmp_path, {"format": "npz", "path": "junk.npz"})
