"""Predict bodies without a running service: the one-copy ``.npy`` encoder against NumPy's own."""

from __future__ import annotations

import io

import numpy as np
import pytest

from serve.errors import ApiError
from serve.predict_io import encode_npy, parse_npy


def _numpy_save(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).normal(size=(24, 1, 181, 360)).astype(np.float32),
        np.random.default_rng(1).normal(size=(3, 2, 5, 7)),  # float64: answered as float32
        np.asfortranarray(np.arange(60, dtype=np.float32).reshape(3, 4, 5)),
        np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::2],  # a strided view
        np.zeros((0, 1, 4, 4), dtype=np.float32),
    ],
    ids=["0.25-degree-shaped", "float64", "fortran", "view", "empty"],
)
def test_encode_npy_writes_the_bytes_numpy_writes(array: np.ndarray) -> None:
    encoded = encode_npy(array)
    assert bytes(encoded) == _numpy_save(array)
    decoded = parse_npy(bytes(encoded))
    np.testing.assert_array_equal(decoded, array.astype(np.float32))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not an npy file", "not a NumPy .npy array"),
        (_numpy_save(np.ones((2, 3)))[:-5], "ends before"),
        (np.lib.format.magic(3, 0) + b"\x00" * 8, "version (3, 0) is not read"),
    ],
    ids=["garbage", "truncated", "version-3"],
)
def test_parse_npy_refuses_what_is_not_a_whole_npy_array(body: bytes, says: str) -> None:
    with pytest.raises(ApiError, match=r"body") as caught:
        parse_npy(body)
    assert caught.value.status == 400
    assert says in caught.value.reason


def test_parse_npy_refuses_pickled_objects_and_text() -> None:
    objects = io.BytesIO()
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    text = io.BytesIO()
    np.save(text, np.array(["288.0"]))
    for body in (objects.getvalue(), text.getvalue()):
        with pytest.raises(ApiError) as caught:
            parse_npy(body)
        assert caught.value.status == 400
