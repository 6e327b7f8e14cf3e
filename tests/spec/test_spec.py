"""The spec models accept the examples and reject bad resources with a field path."""

import typing
from pathlib import Path

import pytest

from kerasop.spec import (
    LAYER_ARGS,
    KerasModelService,
    KerasTrainingJob,
    LayerSpec,
    LayerType,
    SpecError,
    load_documents,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def job(**spec_overrides):
    spec = {
        "data": {"format": "csv", "path": "train.csv"},
        "model": {"layers": [{"type": "Dense", "units": 1, "activation": "sigmoid"}]},
    }
    spec.update(spec_overrides)
    return {"apiVersion": "kerasop.io/v1alpha1", "kind": "KerasTrainingJob",
            "metadata": {"name": "j"}, "spec": spec}  # fmt: skip


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse(path):
    docs = load_documents(path.read_text())
    kinds = {type(d) for d in docs}
    assert kinds <= {KerasTrainingJob, KerasModelService} and KerasTrainingJob in kinds
    if KerasModelService not in kinds:  # only with the reason written down (string inputs)
        assert "no KerasModelService" in path.read_text()


def test_defaults_follow_the_article():
    parsed = KerasTrainingJob.model_validate(job())
    assert parsed.spec.training.epochs == 5
    assert parsed.spec.training.batch_size == 32
    assert parsed.spec.training.optimizer == "adam"
    assert parsed.spec.training.backend == "tensorflow"
    assert parsed.model_name == "j"


def test_layer_table_covers_every_layer_type_and_argument():
    assert set(LAYER_ARGS) == set(typing.get_args(LayerType))
    arguments = {a for args in LAYER_ARGS.values() for a in args.allowed}
    fields = {f.alias for name, f in LayerSpec.model_fields.items() if name != "type"}
    assert arguments == fields


def test_layer_kwargs_are_snake_case_and_sparse():
    layer = LayerSpec.model_validate({"type": "Conv2D", "filters": 8, "kernelSize": 3})
    assert layer.keras_kwargs() == {"filters": 8, "kernel_size": 3}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": {"layers": [{"type": "Dense"}]}}, "Dense needs units"),
        ({"model": {"layers": [{"type": "Conv2D", "filters": 3}]}}, "kernelSize"),
        (
            {"model": {"layers": [{"type": "Dense", "units": 1, "poolSize": 2}]}},
            "Dense does not take poolSize (poolSize is for MaxPooling2D",
        ),
        (
            {"model": {"layers": [{"type": "Flatten", "units": 1, "rate": 0.1}]}},
            "Flatten does not take rate (rate is for Dropout); Flatten does not take units",
        ),
        (
            {"model": {}},
            "set exactly one of model.layers, model.transfer, model.file and model.builder",
        ),
        (
            {"model": {"layers": [{"type": "Dense", "units": 1}], "file": {"path": "n.keras"}}},
            "exactly one of model.layers",
        ),
        (
            {"model": {"layers": [{"type": "Dense", "units": 1}], "codePath": "code"}},
            "codePath applies only to model.file and model.builder",
        ),
        ({"model": {"builder": {"module": "my-models.cnn"}}}, "spec.model.builder.module"),
        ({"model": {"file": {"path": "n.keras", "imports": ["a b"]}}}, "imports"),
        (
            {"data": {"format": "npz", "path": "x", "categoricalColumns": ["c"]}},
            "categoricalColumns applies only to the csv format",
        ),
        ({"training": {"backend": "torch"}}, "spec.training.backend"),
        (
            {
                "model": {"layers": [{"type": "Dense", "units": 1}]},
                "data": {
                    "format": "csv",
                    "path": "x",
                    "validationPath": "v",
                    "validationSplit": 0.2,
                },
            },
            "at most one of validationPath and validationSplit",
        ),
        ({"data": {"format": "parquet", "path": "x"}}, "spec.data.format"),
        ({"training": {"epochs": 0}}, "spec.training.epochs"),
        ({"training": {"learningRate": 0}}, "spec.training.learningRate"),
        ({"data": {"format": "csv", "path": "x", "validationSplit": 1.5}}, "validationSplit"),
        ({"model": {"transfer": {"application": "VGG16", "weights": "file"}}}, "weightsPath"),
        ({"output": {"storage": {"claimName": "a", "size": "1Gi"}}}, "exactly one of claimName"),
        ({"output": {"modelName": "Bad_Name"}}, "spec.output.modelName"),
        ({"trainig": {}}, "spec.trainig"),
        ({"data": {"format": "csv", "path": "ftp://h/x.csv"}}, "path 'ftp://h/x.csv': not a"),
        ({"data": {"format": "csv", "path": "s3://bucket-only"}}, "not a supported URI"),
        (
            {"data": {"format": "csv", "path": "x.csv", "validationPath": "az://b/v.csv"}},
            "validationPath 'az://b/v.csv': not a supported URI",
        ),
        ({"data": {"format": "csv", "path": "gs://bucket-only"}}, "not a supported URI"),
        ({"output": {"uri": "az://bkt/models"}}, "a model store is s3://bucket"),
        ({"output": {"uri": "gs://Bkt/models"}}, "or gs://bucket[/prefix]"),
        (
            {"output": {"uri": "s3://bkt/models", "storage": {"size": "1Gi"}}},
            "at most one of storage (a volume) and uri (a bucket)",
        ),
        ({"output": {"store": {"secretName": "s"}}}, "store applies only with uri"),
        (
            {"data": {"format": "csv", "path": "x", "store": {"endpoint": "seaweed:8333"}}},
            "endpoint",
        ),
    ],
)
def test_invalid_jobs_are_rejected_with_the_field(overrides, message):
    import yaml

    with pytest.raises(SpecError) as err:
        load_documents(yaml.safe_dump(job(**overrides)))
    assert message in str(err.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"model": {}}, "either trainingJob, or name and one of claimName and uri"),
        ({"model": {"trainingJob": "a", "name": "m", "claimName": "c"}}, "either trainingJob"),
        ({"model": {"trainingJob": "a", "name": "m"}}, "either trainingJob"),
        ({"model": {"name": "m"}}, "either trainingJob"),
        ({"model": {"name": "m", "claimName": "c", "uri": "s3://bkt/p"}}, "either trainingJob"),
        ({"model": {"trainingJob": "a", "uri": "s3://bkt/p"}}, "either trainingJob"),
        ({"model": {"name": "m", "claimName": "c", "store": {}}}, "store applies only with uri"),
        (
            {"model": {"trainingJob": "a"}, "autoscaling": {"minReplicas": 3, "maxReplicas": 2}},
            "minReplicas must be <= maxReplicas",
        ),
    ],
)
def test_invalid_services_are_rejected(spec, message):
    import yaml

    doc = {"apiVersion": "kerasop.io/v1alpha1", "kind": "KerasModelService",
           "metadata": {"name": "s"}, "spec": spec}  # fmt: skip
    with pytest.raises(SpecError) as err:
        load_documents(yaml.safe_dump(doc))
    assert message in str(err.value)


def test_object_store_uris_mix_with_volumes():
    """Data from a bucket, models on the default PVC; volume data, models in a bucket."""
    from kerasop.spec import KerasModelService, KerasTrainingJob, StorageSpec

    store = {"secretName": "s3", "endpoint": "http://seaweedfs:8333", "pathStyle": True}
    s3_data = KerasTrainingJob.model_validate(
        job(data={"format": "csv", "path": "s3://b/train.csv", "store": store})
    )
    assert s3_data.spec.output.uri is None and s3_data.spec.output.storage is None
    assert s3_data.spec.output.volume == StorageSpec(size="1Gi")  # the default volume, as before
    s3_models = KerasTrainingJob.model_validate(
        job(output={"uri": "s3://bkt/models", "store": store})
    )
    assert s3_models.spec.output.volume is None and s3_models.spec.data.store is None
    assert s3_models.spec.output.store is not None and s3_models.spec.output.store.path_style
    https = KerasTrainingJob.model_validate(
        job(data={"format": "csv", "path": "https://example.org/d.csv"})
    )
    assert https.spec.data.path == "https://example.org/d.csv"
    svc = KerasModelService.model_validate(
        {
            "apiVersion": "kerasop.io/v1alpha1",
            "kind": "KerasModelService",
            "metadata": {"name": "s"},
            "spec": {"model": {"name": "m", "uri": "s3://bkt/models", "store": store}},
        }
    )
    assert svc.spec.model.uri == "s3://bkt/models" and svc.spec.model.claim_name is None


def test_gs_uris_are_accepted_wherever_s3_ones_are():
    from kerasop.spec import KerasModelService, KerasTrainingJob

    store = {"gcsSecretName": "gcs-key", "endpoint": "http://fake-gcs:4443"}
    trained = KerasTrainingJob.model_validate(
        job(
            data={"format": "csv", "path": "gs://data/train.csv", "store": store},
            output={"uri": "gs://my_models.example/team", "store": store},
        )
    )
    assert trained.spec.data.path == "gs://data/train.csv"
    assert trained.spec.output.uri == "gs://my_models.example/team"  # GCS allows "_"
    assert trained.spec.output.store is not None
    assert trained.spec.output.store.gcs_secret_name == "gcs-key"
    folder = KerasTrainingJob.model_validate(
        job(data={"format": "imageFolder", "path": "gs://data/images/"})
    )
    assert folder.spec.data.path == "gs://data/images/"
    svc = KerasModelService.model_validate(
        {
            "apiVersion": "kerasop.io/v1alpha1",
            "kind": "KerasModelService",
            "metadata": {"name": "s"},
            "spec": {"model": {"name": "m", "uri": "gs://bkt/models", "store": store}},
        }
    )
    assert svc.spec.model.uri == "gs://bkt/models"
