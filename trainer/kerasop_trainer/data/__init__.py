"""Reading training data as ``spec.data`` describes it, failing fast on bad data.

Five formats (``spec.data.format``), one reader module each under :mod:`.readers`
(registry: :data:`.readers.READERS`): ``csv`` (an all-numeric table streamed through a
scratch copy, :mod:`.readers.csv_stream`; one with categorical columns in memory),
``npz``, ``imageCsv`` and ``imageFolder`` (:mod:`.readers.images`: paths only, decoded per
batch) and ``text``. A reader returns the examples as one split type per kind of input
(:mod:`.splits`); :mod:`.labels` encodes the labels for the loss, :func:`load_data` takes
the validation split and what the model learns from the training split, one input type per
kind of data (:mod:`.loaded`): :mod:`.statistics` for tables (numeric features are
standardized by a ``Normalization`` layer inside the model, ``data.normalize``), the text
reader's vocabulary and sequence length for text.
:mod:`.pipeline` builds the ``tf.data`` pipelines and shards the training split over
workers; :mod:`.metadata` is the data's part of ``metadata.json``.

Everything here raises :class:`~kerasop_trainer.errors.TrainerError` with
``EXIT_BAD_DATA`` (or ``EXIT_MODEL_MISMATCH`` when the loss cannot fit the labels).
TensorFlow is imported only when a ``tf.data`` pipeline is built.
"""

from kerasop_trainer.data.loaded import (
    NUMERIC_INPUT,
    ImageInput,
    LoadedData,
    ModelInput,
    TableInput,
    TextInput,
)
from kerasop_trainer.data.loading import load_data
from kerasop_trainer.data.splits import ImageFileSplit

__all__ = [
    "NUMERIC_INPUT",
    "ImageFileSplit",
    "ImageInput",
    "LoadedData",
    "ModelInput",
    "TableInput",
    "TextInput",
    "load_data",
]
