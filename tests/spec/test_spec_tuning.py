"""spec.tuning: the search space is checked against the job's own spec."""

import re

import pytest

from kerasop.spec import TUNABLE_PATH_REGEX, KerasTrainingJob, SpecError, load_documents
from kerasop.spec_paths import PathError, parse_path, set_path


def job(tuning, **spec_overrides):
    spec = {
        "data": {"format": "csv", "path": "train.csv", "validationSplit": 0.25},
        "model": {
            "layers": [
                {"type": "Dense", "units": 8, "activation": "relu"},
                {"type": "Dropout", "rate": 0.1},
                {"type": "Dense", "units": 1, "activation": "sigmoid"},
            ]
        },
        "tuning": tuning,
    }
    spec.update(spec_overrides)
    return {"apiVersion": "kerasop.io/v1alpha1", "kind": "KerasTrainingJob",
            "metadata": {"name": "j"}, "spec": spec}  # fmt: skip


def parse(doc):
    import yaml

    return load_documents(yaml.safe_dump(doc))[0]


SPACE = {
    "training.learningRate": {"logUniform": [1e-4, 1e-1]},
    "model.layers[0].units": {"choice": [4, 8, 16]},
    "model.layers[1].rate": {"uniform": [0.0, 0.5]},
    "training.batchSize": {"intRange": [8, 32, 8]},
}


def test_a_search_parses_with_defaults():
    parsed = parse(job({"space": SPACE}))
    tuning = parsed.spec.tuning
    assert tuning.algorithm == "random" and tuning.max_trials == 10 and tuning.parallelism == 1
    # default objective: the first training metric, on the validation data, higher is better
    assert tuning.objective_metric(parsed.spec.training) == "accuracy"
    assert tuning.objective_direction(parsed.spec.training) == "max"


def test_objective_direction_follows_the_metric_name():
    parsed = parse(job({"space": SPACE, "objective": {"metric": "val_loss"}}))
    assert parsed.spec.tuning.objective_metric(parsed.spec.training) == "loss"
    assert parsed.spec.tuning.objective_direction(parsed.spec.training) == "min"


def test_trial_spec_applies_values_at_their_paths_and_drops_tuning():
    parsed = parse(job({"space": SPACE}))
    trial = parsed.spec.trial_spec({"model.layers[0].units": 16, "training.learningRate": 0.01})
    assert trial.model.layers[0].units == 16
    assert trial.training.learning_rate == 0.01
    assert trial.tuning is None
    assert parsed.spec.model.layers[0].units == 8  # the base spec is untouched


def test_builder_args_are_tunable():
    builder = {"builder": {"module": "m", "args": {"width": 8}}, "codePath": "code"}
    parsed = parse(job({"space": {"model.builder.args.width": {"choice": [4, 8]}}}, model=builder))
    assert parsed.spec.trial_spec({"model.builder.args.width": 4}).model.builder.args == {
        "width": 4
    }


@pytest.mark.parametrize(
    "tuning, message",
    [
        (
            {"space": {"training.learningRat": {"uniform": [0.1, 0.2]}}},
            "training.learningRat names no",
        ),
        ({"space": {"data.path": {"choice": ["a", "b"]}}}, "data.path names no model or training"),
        (
            {"space": {"model.layers[7].units": {"choice": [1, 2]}}},
            "model.layers[7] is out of range",
        ),
        ({"space": {"model.layers[0].rate": {"uniform": [0.1, 0.2]}}}, "Dense does not take rate"),
        ({"space": {"training.learningRate": {"uniform": [0.0, 0.1]}}}, "greater than 0"),
        ({"space": {"model.layers[1].rate": {"uniform": [0.5, 1.5]}}}, "less than 1"),
        ({"space": {"model.layers[0].units": {"uniform": [4, 64]}}}, "fractional part"),
        ({"space": {"training.batchSize": {"intRange": [-8, 32]}}}, "greater than or equal to 1"),
        ({"space": {"training.optimizer": {"choice": ["adam", "nadam"]}}}, "'nadam'"),
        ({"space": {"training.epochs": {"intRange": [5, 1]}}}, "low < high"),
        ({"space": {"training.learningRate": {"logUniform": [0, 1]}}}, "0 < low < high"),
        ({"space": {"training.epochs": {"choice": [1, 2], "intRange": [1, 2]}}}, "exactly one"),
        ({"space": {"training.epochs": {"choice": [1, "a"]}}}, "all of one kind"),
        ({"space": {}}, "at least 1 item"),
        ({"space": SPACE, "maxTrials": 0}, "maxTrials: Input should be greater than or equal to 1"),
        ({"space": SPACE, "objective": {"metric": "val_auc"}}, "metric auc is not reported"),
        ({"space": SPACE, "algorithm": "grid"}, "'random', 'bayesian' or 'hyperband'"),
        (
            {"space": SPACE, "algorithm": "hyperband", "earlyStopping": {}},
            "hyperband stops bad trials by itself",
        ),
    ],
)
def test_bad_searches_are_rejected_with_the_path(tuning, message):
    with pytest.raises(SpecError) as err:
        parse(job(tuning))
    assert message in str(err.value)


def test_tuning_needs_the_builtin_trainer_on_one_worker():
    with pytest.raises(SpecError, match="workers: 1"):
        parse(job({"space": SPACE}, workers=2))


def test_the_cel_path_pattern_knows_the_spec_fields():
    pattern = re.compile(TUNABLE_PATH_REGEX)
    for path in [*SPACE, "model.transfer.fineTuneLayers", "model.transfer.head[0].units",
                 "training.earlyStopping.patience", "model.builder.args.width"]:  # fmt: skip
        assert pattern.match(path), path
    for path in ["data.path", "training.learningRat", "model.layers.units", "training.metrics",
                 "tuning.maxTrials", "model.layers[0].units.x"]:  # fmt: skip
        assert not pattern.match(path), path


def test_paths():
    assert parse_path("model.layers[12].units") == ["model", "layers", 12, "units"]
    doc = {"a": {"b": [1, {"c": 2}]}}
    assert set_path(doc, "a.b[1].c", 3) == {"a": {"b": [1, {"c": 3}]}}
    assert doc == {"a": {"b": [1, {"c": 2}]}}
    with pytest.raises(PathError, match="not a path"):
        parse_path("a..b")
    with pytest.raises(PathError, match=r"a\.x is not set"):
        set_path(doc, "a.x.y", 1)


def test_examples_tuning_parses():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "examples" / "tuning.yaml").read_text()
    jobs = [d for d in load_documents(text) if isinstance(d, KerasTrainingJob)]
    assert jobs[0].spec.tuning is not None
