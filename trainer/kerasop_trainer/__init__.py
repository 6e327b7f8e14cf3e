"""The keras-operator trainer: reads a ``KerasTrainingJob``, trains, publishes a version.

Entry points:

- ``kerasop-train`` (``kerasop_trainer.main:main``): the container / CLI command
  described in ``docs/CONTRACTS.md``.
- ``kerasop_trainer.train.run(job, data_root, store_root, job_id)``: the same, as a
  function (used by the local CLI and the tests).
- ``kerasop_trainer.sample_data``: small deterministic data sets for examples and tests.

Importing this package does not import Keras or TensorFlow: the Keras backend is
chosen from the spec (``KERAS_BACKEND``) before Keras is first imported.
"""

from kerasop_trainer.errors import TrainerError
from kerasop_trainer.train import run

__all__ = ["TrainerError", "run"]
