"""``text``: a CSV with a text column and a label column.

The vocabulary (the training split's ``data.text.maxTokens`` most frequent words,
lower-cased, punctuation removed, split on whitespace: what ``TextVectorization`` does)
goes into the model, which takes the raw strings. Without ``data.text.sequenceLength`` the
texts are cut or padded to a length fitted to the training split
(:func:`fitted_sequence_length`).
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np

from kerasop.spec import DataSpec
from kerasop.store import InputKind
from kerasop_trainer.data.loaded import TextInput
from kerasop_trainer.data.readers.common import column, labels_of, read_table
from kerasop_trainer.data.splits import Raw, TextSplit


def read(spec: DataSpec, path: Path, role: str, training: Raw | None = None) -> Raw:
    header, rows, lines = read_table(path, role)
    text_idx = column(header, spec.text_column, path, "text")
    label_idx = column(header, spec.label_column, path, "label")
    table = np.array(rows, dtype=str)
    labels = labels_of(table, label_idx, spec.label_column, lines, path)
    return Raw(
        kind=InputKind.TEXT,
        shape=(1,),
        examples=TextSplit(y=labels, text=table[:, text_idx]),
        where=str(path),
    )


# TextVectorization's default standardization: lower case, these characters removed.
_PUNCTUATION = re.compile("[" + re.escape("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'") + "]")


def text_vocabulary(texts: np.ndarray, max_tokens: int) -> list[str]:
    """The ``max_tokens - 2`` most frequent words (two slots: padding and unknown words)."""
    counts: collections.Counter[str] = collections.Counter()
    for text in texts.tolist():
        counts.update(_PUNCTUATION.sub("", text.lower()).split())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[: max_tokens - 2]]


# A fitted sequence length covers this share of the training texts whole, and is at most
# FITTED_SEQUENCE_CAP tokens (texts are cut there; longer documents want an explicit one).
FITTED_SEQUENCE_PERCENTILE = 95
FITTED_SEQUENCE_CAP = 512


def fitted_sequence_length(texts: np.ndarray) -> int:
    """Tokens per text when ``data.text.sequenceLength`` is not set.

    A fixed length far above the texts' own pads most of every sequence: a model that
    does not skip the padding (an unmasked average) then learns mostly from padding.
    Fitting the length to the training split keeps the padding to what the texts need.
    """
    words = [len(_PUNCTUATION.sub("", text.lower()).split()) for text in texts.tolist()]
    length = int(np.ceil(np.percentile(words, FITTED_SEQUENCE_PERCENTILE)))
    return min(max(length, 1), FITTED_SEQUENCE_CAP)


def fit(train: TextSplit, spec: DataSpec) -> TextInput:
    """The model's ``TextVectorization`` settings, from the training split."""
    settings = spec.text_or_default()
    length = settings.sequence_length
    return TextInput(
        column=spec.text_column,
        vocabulary=text_vocabulary(train.text, settings.max_tokens),
        sequence_length=fitted_sequence_length(train.text) if length is None else length,
        sequence_length_fitted=length is None,
    )
