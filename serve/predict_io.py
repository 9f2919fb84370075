"""Bodies of ``POST /v1/predict``: reading within the size limit, decoding and encoding arrays.

Three formats, the answer in the request's:

- ``application/json``: ``{model?, init_time, lead_hours, fields}`` with ``fields`` nested lists
  ``[history, channels, lat, lon]``; the answer's ``fields`` are ``[lead, channels, lat, lon]``.
- ``application/x-npy``: one NumPy ``.npy`` array ``[history, channels, lat, lon]`` (no pickles),
  ``init_time``, ``lead_hours`` and ``model`` as query parameters; the answer is a ``.npy``
  ``[lead, channels, lat, lon]`` float32 with the metadata in ``X-*`` headers.
- ``application/vnd.apache.arrow.stream``: an Arrow IPC stream whose first column is a
  ``fixed_shape_tensor<float32>[channels, lat, lon]`` with one row per history step; the answer
  has one row per lead time (columns ``lead_hours`` and ``fields``), metadata in the schema.
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any, cast

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from serve.errors import ApiError, bad_parameter

JSON = "application/json"
NPY = "application/x-npy"
ARROW = "application/vnd.apache.arrow.stream"
MEDIA_TYPES = (JSON, NPY, ARROW)


class PredictBody(BaseModel):
    """The JSON body of ``POST /v1/predict``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="name:version or name; the default")
    init_time: datetime = Field(description="UTC time of the last initial field, e.g. ...Z")
    lead_hours: list[int] = Field(min_length=1, description="lead times to answer, in hours")
    fields: list[Any] = Field(description="nested lists [history, channels, lat, lon]")


def media_type_of(request: Request) -> str:
    """The body's media type, one of :data:`MEDIA_TYPES`; 415 otherwise."""
    found = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if found not in MEDIA_TYPES:
        raise ApiError(
            415, f"content-type {found!r} is not accepted; send one of {', '.join(MEDIA_TYPES)}"
        )
    return found


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes; send a smaller grid")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes by its Content-Length or as read."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as exc:
            raise ApiError(400, f"Content-Length {declared!r} is not a number") from exc
        if size > limit:
            raise _too_large(limit)
    parts: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            parts.append(chunk)
    except ClientDisconnect as exc:
        raise ApiError(400, "the client closed the connection before the body ended") from exc
    return b"".join(parts)


def parse_json(body: bytes) -> tuple[PredictBody, np.ndarray]:
    """The JSON body and its fields as a float32 array; 400 naming what is wrong."""
    try:
        parsed = PredictBody.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise bad_parameter(where, f"{first['msg']} (in the JSON body)") from exc
    try:
        fields = np.asarray(parsed.fields, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise bad_parameter(
            "fields", "not a regular array of numbers [history, channels, lat, lon]"
        ) from exc
    return parsed, fields


def _npy_view(body: bytes) -> np.ndarray:
    """The array of a ``.npy`` body as a read-only view of it, without copying the values."""
    stream = io.BytesIO(body)
    version = np.lib.format.read_magic(stream)
    read_header = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get(version)
    if read_header is None:
        raise ValueError(f".npy format version {version} is not read; write version 1.0 or 2.0")
    shape, fortran_order, dtype = read_header(stream)
    if dtype.hasobject:
        raise ValueError("the array holds Python objects, which are not accepted")
    count = int(np.prod(shape, dtype=np.int64))
    offset = stream.tell()
    if len(body) - offset < count * dtype.itemsize:
        raise ValueError(f"the body ends before the {shape} array does")
    values = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    return values.reshape(shape, order="F" if fortran_order else "C")


def parse_npy(body: bytes) -> np.ndarray:
    """A ``.npy`` body as float32 (pickled objects refused); 400 when it is not one."""
    try:
        array = _npy_view(body)
    except (ValueError, OSError, EOFError) as exc:
        raise bad_parameter("body", f"not a NumPy .npy array ({exc})") from exc
    if array.dtype.kind not in "fiu":
        raise bad_parameter("body", "the .npy array must hold numbers (float32 preferably)")
    return array.astype(np.float32, copy=False)


def parse_arrow(body: bytes) -> np.ndarray:
    """An Arrow IPC stream body as float32 [history, channels, lat, lon]; 400 otherwise."""
    try:
        table = pa.ipc.open_stream(pa.BufferReader(body)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise bad_parameter("body", f"not an Arrow IPC stream ({exc})") from exc
    expected = "one column of fixed_shape_tensor<float32>[channels, lat, lon], one row per hour"
    if table.num_columns < 1:
        raise bad_parameter("body", f"the Arrow table has no column; send {expected}")
    column = table.column(0).combine_chunks()
    kind = column.type
    if not isinstance(kind, pa.FixedShapeTensorType):
        raise bad_parameter("body", f"column {table.column_names[0]} is {kind}; {expected}")
    if not pa.types.is_floating(kind.value_type):
        raise bad_parameter("body", f"the tensor holds {kind.value_type}; {expected}")
    permutation = kind.permutation
    if permutation is not None and list(permutation) != sorted(permutation):
        raise bad_parameter(
            "body", f"the tensor is permuted ({permutation}); send it in C order: {expected}"
        )
    values = column.storage.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape((len(column), *kind.shape))


def _c_order(fields: np.ndarray) -> np.ndarray:
    """A fresh C-ordered float32 copy: a view's strides would make Arrow permute the tensor."""
    return np.array(fields, dtype=np.float32, order="C", copy=True)


def encode_npy(fields: np.ndarray) -> bytearray:
    """float32 fields as a ``.npy`` file, built with one copy of the values (``np.save`` to
    memory makes three)."""
    array = np.ascontiguousarray(fields, dtype=np.float32)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    head = header.getvalue()
    body = bytearray(len(head) + array.nbytes)
    body[: len(head)] = head
    np.frombuffer(body, dtype=np.float32, offset=len(head)).reshape(array.shape)[...] = array
    return body


class NpyResponse(Response):
    """A ``.npy`` answer sent from :func:`encode_npy`'s buffer as it is: Starlette would copy a
    bytearray into bytes, and a memoryview cannot cross Serve's proxy (its messages are
    pickled)."""

    media_type = NPY

    def render(self, content: Any) -> bytes | memoryview:
        if isinstance(content, bytearray):
            return cast(bytes, content)  # sent and pickled like bytes by uvicorn and Serve
        return super().render(content)


def encode_arrow(fields: np.ndarray, lead_hours: list[int], metadata: dict[str, Any]) -> bytes:
    """[lead, channels, lat, lon] fields as an Arrow IPC stream, one row per lead time."""
    tensors = pa.FixedShapeTensorArray.from_numpy_ndarray(_c_order(fields))
    table = pa.table({"lead_hours": pa.array(lead_hours, type=pa.int32()), "fields": tensors})
    table = table.replace_schema_metadata({k: json.dumps(v) for k, v in metadata.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_arrow(body: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """An answer of :func:`encode_arrow`: fields [lead, channels, lat, lon] and the metadata."""
    table = pa.ipc.open_stream(pa.BufferReader(body)).read_all()
    column = table.column("fields").combine_chunks()
    values = column.storage.flatten().to_numpy(zero_copy_only=False)
    fields = values.reshape((len(column), *column.type.shape))
    metadata = {k.decode(): json.loads(v) for k, v in (table.schema.metadata or {}).items()}
    return np.asarray(fields, dtype=np.float32), metadata


def encode_arrow_request(fields: np.ndarray) -> bytes:
    """[history, channels, lat, lon] initial fields as a request body (for clients and tests)."""
    tensors = pa.FixedShapeTensorArray.from_numpy_ndarray(_c_order(fields))
    sink = pa.BufferOutputStream()
    table = pa.table({"fields": tensors})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())
