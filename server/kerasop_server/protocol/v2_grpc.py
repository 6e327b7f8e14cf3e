"""Open Inference Protocol (KServe v2) over gRPC: the messages, and their conversion.

The message classes are built from ``grpc_predict_v2.pb`` (compiled from
``grpc_predict_v2.proto`` by tools/protogen.py) in a descriptor pool of this module's
own, so that an OIP client in the same process (tritonclient's ``inference.*`` in the
default pool) cannot clash with them.

A ``ModelInferRequest`` becomes what a REST request becomes (v2.py): the same envelope
and per-input binary chunks, parsed by the same code, so both protocols accept the
same tensors and answer the same messages. ``raw_input_contents`` are the binary
extension's chunks as they are; typed ``contents`` become the tensor's data.
"""

from __future__ import annotations

import math
import struct
from importlib import resources
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from ..errors import ClientError
from ..signature import Signature
from .v2 import V2Request, v2_datatype, v2_request, validate_request

SERVICE = "inference.GRPCInferenceService"


def _messages() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    files = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files(__package__).joinpath("grpc_predict_v2.pb").read_bytes()
    )
    for proto in files.file:
        pool.AddSerializedFile(proto.SerializeToString())
    package = pool.FindFileByName(files.file[0].name)
    return {
        name: message_factory.GetMessageClass(descriptor)
        for name, descriptor in package.message_types_by_name.items()
    }


MESSAGES = _messages()
ModelInferRequest = MESSAGES["ModelInferRequest"]
ModelInferResponse = MESSAGES["ModelInferResponse"]

# The typed contents field of each datatype (FP16 has none: raw contents only).
CONTENTS: dict[str, str] = {
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
    "BOOL": "bool_contents",
}
_CONTENT_FIELDS = sorted(set(CONTENTS.values()))


def as_message(name: str, data: dict[str, Any]) -> Any:
    """The message ``inference.<name>`` holding ``data`` (the REST answer's JSON form:
    fields the message lacks, such as metadata ``parameters``, are left out)."""
    return json_format.ParseDict(data, MESSAGES[name](), ignore_unknown_fields=True)


def _parameters(params: Any) -> dict[str, Any]:
    return {
        k: getattr(v, v.WhichOneof("parameter_choice") or "bool_param") for k, v in params.items()
    }


def _typed_data(tensor: Any, what: str) -> tuple[Any, bytes | None]:
    """The data of an input given in typed ``contents``: numbers as the list JSON's
    ``data`` would be (cast and range-checked to the datatype by REST's parser), BYTES
    elements as a binary chunk (length-prefixed, as REST's binary extension)."""
    given = [f for f in _CONTENT_FIELDS if len(getattr(tensor.contents, f))]
    field = CONTENTS.get(tensor.datatype)
    if given and given != [field]:
        wanted = f"contents.{field}" if field else "raw_input_contents"
        raise ClientError(
            f"{what}: datatype {tensor.datatype!r} takes {wanted}, got contents.{given[0]}"
        )
    if not given:
        if math.prod(tensor.shape):
            raise ClientError(f"{what}: no data: set its contents or raw_input_contents")
        return [], None
    values = getattr(tensor.contents, given[0])
    if tensor.datatype == "BYTES":
        return None, b"".join(struct.pack("<I", len(b)) + b for b in values)
    return list(values), None


def parse_grpc_infer(message: Any, sig: Signature) -> V2Request:
    """A ``ModelInferRequest`` against ``sig``.

    The answer carries its outputs in ``raw_output_contents`` when the request sent
    ``raw_input_contents`` (tritonclient always does) or asked for ``binary_data``
    outputs, as Triton does; else in typed ``contents``.
    """
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise ClientError(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs;"
            " give one per input, or none and typed contents"
        )
    inputs: list[dict[str, Any]] = []
    chunks: list[bytes | None] = []
    for i, tensor in enumerate(message.inputs):
        entry = {
            "name": tensor.name,
            "shape": list(tensor.shape),
            "datatype": tensor.datatype,
            "parameters": _parameters(tensor.parameters),
        }
        if raw:
            chunk = raw[i]
        else:
            entry["data"], chunk = _typed_data(tensor, f"input '{tensor.name}'")
        inputs.append(entry)
        chunks.append(chunk)
    request = validate_request(
        {
            "id": message.id or None,
            "parameters": _parameters(message.parameters),
            "inputs": inputs,
            "outputs": [
                {"name": o.name, "parameters": _parameters(o.parameters)} for o in message.outputs
            ],
        }
    )
    parsed = v2_request(request, chunks, sig)
    parsed.binary_output = parsed.binary_output or bool(raw)
    return parsed


def encode_grpc_infer_response(
    model: str, version: int, sig: Signature, out: np.ndarray, request: V2Request
) -> Any:
    """The ``ModelInferResponse`` of ``out``: raw or typed contents (see :func:`parse_grpc_infer`)."""
    out = np.ascontiguousarray(out)
    datatype = v2_datatype(out.dtype)
    response = ModelInferResponse(model_name=model, model_version=str(version), id=request.id or "")
    tensor = response.outputs.add(name=sig.output_name, datatype=datatype, shape=out.shape)
    if request.binary_output or datatype not in CONTENTS:
        response.raw_output_contents.append(
            out.astype(out.dtype.newbyteorder("<"), copy=False).tobytes()
        )
    else:
        getattr(tensor.contents, CONTENTS[datatype]).extend(out.ravel().tolist())
    return response
