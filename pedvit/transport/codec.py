"""numpy <-> `pedvit.v1.Tensor` conversion.

The wire format is a dtype name, a shape and the raw little-endian C-order bytes. Encoding makes one copy
(`tobytes`, which protobuf needs anyway); decoding makes none (`np.frombuffer` views the message bytes), so
decoded arrays are **read-only**: copy them before writing in place.

`decode_tensor` is the first thing that touches untrusted input on both sides of the wire, so it checks
everything before allocating: dtype allow-list, rank, non-negative dims, an element limit and an exact
byte count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from pedvit.transport import pedvit_pb2 as pb

#: dtypes that may cross the wire (numpy names).
ALLOWED_DTYPES: tuple[str, ...] = ("uint8", "float16", "float32", "int32")
#: Output dtypes a worker can answer in; the first is the default ("" on the wire).
OUT_DTYPES: tuple[str, ...] = ("float16", "float32")
#: Largest accepted rank. Batches are rank 4, meta rank 2.
MAX_RANK = 8
#: Default gRPC message size limit (both directions) for workers and clients.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Largest accepted element count (2**28 = 256 Mi elements, far above a 64 MiB message).
MAX_ELEMENTS = 1 << 28


def _wire_dtype(name: str) -> np.dtype:
    """The explicit little-endian numpy dtype for a wire dtype name."""
    return np.dtype(name).newbyteorder("<")


def encode_tensor(array: np.ndarray) -> pb.Tensor:
    """Encode an array as a Tensor message.

    Raises:
        ValueError: if the dtype is not in `ALLOWED_DTYPES`.
    """
    array = np.asarray(array)
    name = array.dtype.name
    if name not in ALLOWED_DTYPES:
        raise ValueError(f"cannot encode dtype {name!r}; allowed: {list(ALLOWED_DTYPES)}")
    wire = _wire_dtype(name)
    # Only convert (copy) when the array is big-endian or not C-contiguous; the common case goes
    # straight to tobytes().
    if array.dtype != wire or not array.flags.c_contiguous:
        array = array.astype(wire, order="C")
    return pb.Tensor(dtype=name, shape=array.shape, data=array.tobytes())


def checked_shape(
    dtype: str,
    shape: Sequence[int],
    nbytes: int | None = None,
    *,
    allowed_dtypes: Iterable[str] = ALLOWED_DTYPES,
    max_rank: int = MAX_RANK,
    max_elements: int = MAX_ELEMENTS,
) -> tuple[int, ...]:
    """Validate a declared dtype/shape (and, if given, the payload size); return the shape as a tuple.

    Raises:
        ValueError: with a readable message on the first problem found.
    """
    allowed = tuple(allowed_dtypes)
    if dtype not in allowed:
        raise ValueError(f"unsupported tensor dtype {dtype!r}; allowed: {list(allowed)}")
    shape = tuple(int(d) for d in shape)
    if len(shape) > max_rank:
        raise ValueError(f"tensor rank {len(shape)} exceeds the limit of {max_rank}")
    if any(d < 0 for d in shape):
        raise ValueError(f"tensor shape {list(shape)} has a negative dimension")
    # Python ints: no overflow however large the declared dims are.
    count = math.prod(shape)
    if count > max_elements:
        raise ValueError(f"tensor shape {list(shape)} has {count} elements, over the limit of {max_elements}")
    if nbytes is not None:
        expected = count * np.dtype(dtype).itemsize
        if nbytes != expected:
            raise ValueError(
                f"tensor data has {nbytes} bytes but dtype {dtype} x shape {list(shape)} needs {expected}"
            )
    return shape


def decode_tensor(
    tensor: pb.Tensor,
    *,
    allowed_dtypes: Iterable[str] = ALLOWED_DTYPES,
    max_rank: int = MAX_RANK,
    max_elements: int = MAX_ELEMENTS,
) -> np.ndarray:
    """Decode a Tensor message into a read-only array viewing the message bytes.

    Raises:
        ValueError: on a disallowed dtype, a negative/over-rank/oversize shape, or a byte count that does
            not match dtype x shape exactly.
    """
    data = tensor.data
    shape = checked_shape(
        tensor.dtype,
        tensor.shape,
        len(data),
        allowed_dtypes=allowed_dtypes,
        max_rank=max_rank,
        max_elements=max_elements,
    )
    return np.frombuffer(data, dtype=_wire_dtype(tensor.dtype)).reshape(shape)
