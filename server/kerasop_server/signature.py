"""What the served model takes and gives: its input and output tensors.

Built once per loaded version from ``metadata.json`` and the shapes the engine
reports. The model's one input is called ``input`` (``metadata.json`` may name
it with ``input.name``); the name of the Keras input tensor is accepted as
well. Its one output is called ``output`` (or ``output.name``).

A model that takes strings (a table with categorical columns, text) has a
``raw`` layout instead (raw.py): its input is the ``[N, columns]`` raw rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .raw import RawLayout


@dataclass(frozen=True)
class ImageTarget:
    height: int
    width: int
    channels: int  # 1 (decoded as "L") or 3 ("RGB")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


@dataclass(frozen=True)
class Signature:
    """The served model's input and output, from metadata.json and the engine."""

    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: np.dtype[Any]
    output_name: str
    output_shape: tuple[int | None, ...]
    output_dtype: np.dtype[Any]
    kind: str = "tabular"
    image: ImageTarget | None = None
    feature_names: tuple[str, ...] | None = None
    input_aliases: frozenset[str] = field(default_factory=frozenset)
    output_kind: str | None = None
    class_names: tuple[str, ...] | None = None
    raw: RawLayout | None = None

    @property
    def input_names(self) -> frozenset[str]:
        return self.input_aliases | {self.input_name}

    @classmethod
    def build(
        cls,
        metadata: dict[str, Any],
        *,
        input_shape: tuple[int | None, ...],
        input_dtype: Any,
        output_shape: tuple[int | None, ...],
        output_dtype: Any,
        engine_input_name: str | None = None,
    ) -> Signature:
        """Combine metadata.json with the shapes the engine reports.

        Raises ``ValueError`` when metadata.json contradicts the model.
        """
        meta_in = metadata.get("input") or {}
        meta_out = metadata.get("output") or {}
        raw = RawLayout.from_metadata(meta_in)
        if raw is not None:
            if input_shape != (len(raw.columns),):
                raise ValueError(
                    f"metadata.json describes {len(raw.columns)} raw column(s) {list(raw.names)};"
                    f" the engine takes {list(input_shape)} (serve it with the Keras engine)"
                )
            return cls(
                input_name="input",
                input_shape=input_shape,
                input_dtype=np.dtype(object),
                output_name=str(meta_out.get("name") or "output"),
                output_shape=merge_shape(output_shape, meta_out.get("shape"), "output"),
                output_dtype=np.dtype(output_dtype),
                kind=str(meta_in.get("kind") or "tabular"),
                feature_names=raw.names,
                input_aliases=frozenset({*raw.names, "text"} if raw.kind == "text" else ()),
                output_kind=meta_out.get("kind"),
                class_names=tuple(str(c) for c in meta_out.get("classNames") or ()) or None,
                raw=raw,
            )
        shape = merge_shape(input_shape, meta_in.get("shape"), "input")
        kind = str(meta_in.get("kind") or "tabular")
        image = None
        if kind == "image":
            img = meta_in.get("image") or {}
            dims = [img.get("height"), img.get("width"), img.get("channels")]
            if len(shape) == 3:
                dims = [d if d is not None else s for d, s in zip(dims, shape, strict=True)]
            if any(d is None for d in dims) or len(shape) != 3:
                raise ValueError(
                    f"image model: cannot tell the image size (input shape {list(shape)},"
                    f" metadata image {img})"
                )
            image = ImageTarget(int(dims[0]), int(dims[1]), int(dims[2]))  # type: ignore[arg-type]
            if image.channels not in (1, 3):
                raise ValueError(f"image model: channels must be 1 or 3, not {image.channels}")
            shape = merge_shape(shape, list(image.shape), "input")
        names = meta_in.get("featureNames")
        features = tuple(str(n) for n in names) if names else None
        if features and (len(shape) != 1 or shape[0] not in (None, len(features))):
            features = None  # names that do not describe a flat vector are only documentation
        aliases = {engine_input_name} if engine_input_name else set()
        classes = meta_out.get("classNames")
        return cls(
            input_name=str(meta_in.get("name") or "input"),
            input_shape=shape,
            input_dtype=np.dtype(input_dtype),
            output_name=str(meta_out.get("name") or "output"),
            output_shape=merge_shape(output_shape, meta_out.get("shape"), "output"),
            output_dtype=np.dtype(output_dtype),
            kind=kind,
            image=image,
            feature_names=features,
            input_aliases=frozenset(aliases),
            output_kind=meta_out.get("kind"),
            class_names=tuple(str(c) for c in classes) if classes else None,
        )


def merge_shape(engine: tuple[int | None, ...], meta: Any, what: str) -> tuple[int | None, ...]:
    if meta is None:
        return tuple(engine)
    meta_t = tuple(None if d is None or int(d) < 0 else int(d) for d in meta)
    if len(meta_t) != len(engine):
        raise ValueError(
            f"metadata.json {what} shape {list(meta)} does not match the model's {list(engine)}"
        )
    out = []
    for e, m in zip(engine, meta_t, strict=True):
        if e is not None and m is not None and e != m:
            raise ValueError(
                f"metadata.json {what} shape {list(meta)} does not match the model's {list(engine)}"
            )
        out.append(e if e is not None else m)
    return tuple(out)


def shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join(["N", *("?" if d is None else str(d) for d in shape)]) + "]"
