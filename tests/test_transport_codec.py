"""numpy <-> Tensor codec: round trips and rejection of malformed tensors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedvit.transport import pedvit_pb2 as pb
from pedvit.transport.codec import ALLOWED_DTYPES, MAX_ELEMENTS, MAX_RANK, decode_tensor, encode_tensor

SHAPES = [(), (0,), (5,), (2, 3), (3, 0, 2), (0, 0), (1, 4, 5, 3), (2, 1, 1, 1, 1, 1, 1, 1)]


@pytest.mark.parametrize("dtype", ALLOWED_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    t = encode_tensor(a)
    assert t.dtype == dtype and tuple(t.shape) == shape and len(t.data) == a.nbytes
    # Through the wire format too, not just the message object.
    b = decode_tensor(pb.Tensor.FromString(t.SerializeToString()))
    assert b.dtype == np.dtype(dtype) and b.shape == shape
    np.testing.assert_array_equal(a, b)


def test_decode_is_a_read_only_view() -> None:
    t = encode_tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    b = decode_tensor(t)
    assert not b.flags.writeable and not b.flags.owndata


def test_encode_is_little_endian_and_c_order() -> None:
    a = np.arange(6, dtype=">f4").reshape(2, 3)
    t = encode_tensor(a)
    assert t.data == np.arange(6, dtype="<f4").reshape(2, 3).tobytes()
    fortran = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    np.testing.assert_array_equal(decode_tensor(encode_tensor(fortran)), fortran)
    strided = np.arange(20, dtype=np.uint8)[::3]
    np.testing.assert_array_equal(decode_tensor(encode_tensor(strided)), strided)


@pytest.mark.parametrize("dtype", ["float64", "int64", "bool", "complex64"])
def test_encode_rejects_other_dtypes(dtype: str) -> None:
    with pytest.raises(ValueError, match="dtype"):
        encode_tensor(np.zeros(3, dtype=dtype))


def test_decode_limits_are_configurable() -> None:
    t = encode_tensor(np.zeros((2, 3), np.float16))
    with pytest.raises(ValueError, match="rank"):
        decode_tensor(t, max_rank=1)
    with pytest.raises(ValueError, match="elements"):
        decode_tensor(t, max_elements=5)
    with pytest.raises(ValueError, match="dtype"):
        decode_tensor(t, allowed_dtypes=("uint8",))


def _valid_tensor() -> st.SearchStrategy[pb.Tensor]:
    shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4)
    return st.builds(
        lambda dtype, shape: encode_tensor(np.zeros(shape, dtype=dtype)),
        st.sampled_from(ALLOWED_DTYPES),
        shapes,
    )


@st.composite
def malformed_tensors(draw: st.DrawFn) -> pb.Tensor:
    """A valid tensor with exactly one thing broken."""
    t = draw(_valid_tensor())
    kind = draw(st.sampled_from(["dtype", "negative", "rank", "short", "long", "huge"]))
    if kind == "dtype":
        t.dtype = draw(st.sampled_from(["float64", "int64", "", "FLOAT32", "object", "<f4", "uint8 "]))
    elif kind == "negative":
        dims = list(t.shape) or [1]
        dims[draw(st.integers(0, len(dims) - 1))] = draw(st.integers(-(2**62), -1))
        t.ClearField("shape")
        t.shape.extend(dims)
        t.data = b""
    elif kind == "rank":
        t.ClearField("shape")
        t.shape.extend([1] * draw(st.integers(MAX_RANK + 1, MAX_RANK + 20)))
        t.data = bytes(np.dtype(t.dtype).itemsize)
    elif kind == "short":
        if t.data:
            t.data = t.data[: draw(st.integers(0, len(t.data) - 1))]
        else:  # nothing to truncate: declare elements that are not there instead
            t.ClearField("shape")
            t.shape.extend([draw(st.integers(1, 7))])
    elif kind == "long":
        t.data = t.data + draw(st.binary(min_size=1, max_size=17))
    else:  # huge: declared element count far past the limit, with a tiny payload
        t.ClearField("shape")
        t.shape.extend(draw(st.lists(st.integers(2**20, 2**62), min_size=2, max_size=4)))
    return t


@settings(max_examples=150, deadline=None)
@given(malformed_tensors())
def test_decode_rejects_malformed(t: pb.Tensor) -> None:
    with pytest.raises(ValueError):
        decode_tensor(pb.Tensor.FromString(t.SerializeToString()))


def test_element_limit_without_payload() -> None:
    t = pb.Tensor(dtype="uint8", shape=[MAX_ELEMENTS + 1], data=b"")
    with pytest.raises(ValueError, match="limit"):
        decode_tensor(t)
