"""keras-operator core: spec models, model store contract, trainer events.

This package is shared by the operator, the trainer, the model server and the
local CLI, so it must stay light: no TensorFlow, no kopf.
"""

from importlib.metadata import version

# Written once, in pyproject.toml; every package reports this one.
__version__ = version("keras-operator")
