"""keras-operator core: spec models, model store contract, trainer events.

This package is shared by the operator, the trainer, the model server and the
local CLI, so it must stay light: no TensorFlow, no kopf.
"""

__version__ = "0.1.0"
