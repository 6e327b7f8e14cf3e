"""Lineage in metadata.json: spec hash and training-data fingerprint."""

from __future__ import annotations

from pathlib import Path

from kerasop.spec import KerasTrainingJob
from kerasop_trainer.lineage import data_fingerprint, lineage


def job(path: str, validation: str | None = None) -> KerasTrainingJob:
    data = {"format": "csv", "path": path} | ({"validationPath": validation} if validation else {})
    return KerasTrainingJob.model_validate(
        {
            "metadata": {"name": "j"},
            "spec": {
                "data": data,
                "model": {"layers": [{"type": "Dense", "units": 1, "activation": "sigmoid"}]},
            },
        }
    )


def test_fingerprint_follows_the_bytes_and_names_of_the_data(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_text("f,label\n1,0\n")
    (tmp_path / "a" / "y.csv").write_text("f,label\n2,1\n")
    first = data_fingerprint(tmp_path, ["a"])
    assert first == data_fingerprint(tmp_path, ["a"]) and first.startswith("sha256:")
    (tmp_path / "a" / "y.csv").write_text("f,label\n2,0\n")  # a shuffled label
    changed = data_fingerprint(tmp_path, ["a"])
    assert changed != first
    (tmp_path / "a" / "y.csv").rename(tmp_path / "a" / "z.csv")
    assert data_fingerprint(tmp_path, ["a"]) != changed
    # the same data elsewhere: the same fingerprint
    other = tmp_path / "elsewhere"
    (other / "a").mkdir(parents=True)
    for f in (tmp_path / "a").iterdir():
        (other / "a" / f.name).write_bytes(f.read_bytes())
    assert data_fingerprint(other, ["a"]) == data_fingerprint(tmp_path, ["a"])


def test_lineage_covers_validation_data_and_spec(tmp_path: Path):
    (tmp_path / "t.csv").write_text("f,label\n1,0\n")
    (tmp_path / "v.csv").write_text("f,label\n1,1\n")
    plain, with_val = (
        lineage(job("t.csv"), "uid-1", tmp_path),
        lineage(job("t.csv", "v.csv"), "u", tmp_path),
    )
    assert plain["job"] == "j" and plain["jobId"] == "uid-1"
    assert plain["dataFingerprint"] != with_val["dataFingerprint"]
    assert plain["specHash"] != with_val["specHash"] and len(plain["specHash"]) == 16
    assert lineage(job("t.csv"), "other-uid", tmp_path)["specHash"] == plain["specHash"]
