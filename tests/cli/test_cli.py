"""The local CLI's pure parts, and its error path for bad files."""

import json
from pathlib import Path

import pytest

from kerasop import events
from kerasop_cli import main as cli
from kerasop_server import main as kerasop_server_main

EXAMPLE = cli.demo_example()


def test_service_following_a_job_serves_the_jobs_model():
    docs = cli.read_resources(EXAMPLE)
    service = cli.pick(docs, cli.KerasModelService)
    assert cli.served_model(docs, service) == ("dense-classifier", None)


def test_predict_drops_the_label_of_the_job_the_service_follows(tmp_path):
    """Two jobs in one file: the label column comes from the followed one, not the first."""
    text = EXAMPLE.read_text()
    job = text.split("---")[0]
    other = (
        job.replace("name: dense-classifier", "name: other")
        .replace("modelName: dense-classifier", "modelName: other")
        .replace("labelColumn: label", "labelColumn: target")
    )
    service = text.split("---")[1].replace("trainingJob: dense-classifier", "trainingJob: other")
    path = tmp_path / "two.yaml"
    path.write_text("\n---\n".join([job, other, service]))
    docs = cli.read_resources(path)
    model, _ = cli.served_model(docs, cli.pick(docs, cli.KerasModelService))
    assert (model, cli.label_column(docs, model)) == ("other", "target")
    assert cli.label_column(docs, "dense-classifier") == "label"
    assert cli.label_column(docs, "not-in-the-file") is None


def test_server_argv_carries_the_server_settings(tmp_path):
    args = cli.build_parser().parse_args(
        ["serve", "-f", str(EXAMPLE), "--store", str(tmp_path), "--port", "9999"]
    )
    argv = cli.server_argv(args, cli.read_resources(EXAMPLE))
    assert argv[argv.index("--model") + 1] == "dense-classifier"
    assert argv[argv.index("--port") + 1] == "9999"
    assert argv[argv.index("--store-root") + 1] == str(tmp_path)
    assert argv[argv.index("--grpc-port") + 1] == "8081"  # spec.server.grpcPort's default
    assert "--version" not in argv
    args.grpc_port = 0  # kerasop serve --grpc-port 0: the last flag wins
    argv = cli.server_argv(args, cli.read_resources(EXAMPLE))
    assert kerasop_server_main.parse_args(argv)[0].grpc_port == 0


def test_progress_lines_are_readable():
    line = events.encode("epoch", epoch=2, epochs=5, metrics={"loss": 0.5, "accuracy": 0.75})
    assert cli.format_progress(events.decode(line)) == "epoch 2/5  accuracy=0.7500 loss=0.5000"
    assert cli.format_progress(events.StartEvent(epochs=5, resumed_from_epoch=3)) == (
        "training: 5 epochs, resuming after epoch 3"
    )


def test_rows_from_csv_drops_the_label(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,1\n")
    assert cli.rows_from_csv(path, 2, "label") == [[1.0, 2.0], [3.0, 4.0]]


def test_rows_from_csv_keeps_strings_and_the_feature_columns_order(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("city,age,churn,value\nberlin,25,yes,3.5\nparis,70,no,1\n")
    assert cli.rows_from_csv(path, 5, "churn", ["age", "city"]) == [
        [25.0, "berlin"],
        [70.0, "paris"],
    ]
    with pytest.raises(cli.CliError, match="no column"):
        cli.rows_from_csv(path, 1, "churn", ["age", "plan"])


def test_bad_file_gives_one_line_error_and_spec_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({
        "apiVersion": "kerasop.io/v1alpha1", "kind": "KerasTrainingJob", "metadata": {"name": "x"},
        "spec": {"data": {"format": "csv", "path": "t.csv"}, "model": {"layers": [{"type": "Dense"}]}},
    }))  # fmt: skip
    assert cli.main(["validate", "-f", str(bad)]) == events.EXIT_BAD_SPEC
    err = capsys.readouterr().err
    assert "KerasTrainingJob x" in err and "Dense needs units" in err


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["validate", "-f", str(tmp_path / "nope.yaml")]) == events.EXIT_BAD_SPEC
    assert "cannot read" in capsys.readouterr().err


def test_file_without_resources_is_rejected(tmp_path):
    empty = tmp_path / "e.yaml"
    empty.write_text("kind: ConfigMap\n")
    with pytest.raises(cli.CliError, match="no KerasTrainingJob"):
        cli.read_resources(empty)


def test_server_argv_mirrors_a_bucket_under_the_local_store(tmp_path):
    """A service whose model lives in a bucket (examples/object-store.yaml): the server gets
    the URI and its options (never a key) and mirrors it under the local store."""
    example = Path(__file__).resolve().parents[2] / "examples" / "object-store.yaml"
    docs = cli.read_resources(example)
    args = cli.build_parser().parse_args(["serve", "-f", str(example), "--store", str(tmp_path)])
    argv = cli.server_argv(args, docs)
    assert argv[argv.index("--store-uri") + 1] == "s3://kerasop/models"
    options = json.loads(argv[argv.index("--store-options") + 1])
    assert options == {
        "secretName": "s3-creds",
        "endpoint": "http://seaweedfs.kerasop-system:8333",
        "pathStyle": True,
    }
    config, _ = kerasop_server_main.parse_args(argv)
    assert config.store_uri == "s3://kerasop/models"
    assert config.store_root.parent == tmp_path / ".buckets"
