"""Binary array encoding round-trips float64 and uint64 exactly."""

import json

import numpy as np
import pytest

from healthspace.core.encoding import decode_array, encode_array


@pytest.mark.parametrize(
    "values",
    [
        np.array([0.1, -1e-308, 1.7976931348623157e308, np.nan, np.inf]),
        np.array([0, 2**64 - 1, 2**63 + 12345], dtype=np.uint64),
        np.arange(12, dtype=np.int64).reshape(3, 4) - 6,
        np.array([], dtype=np.float64),
    ],
)
def test_round_trip_is_bit_exact(values):
    wire = json.loads(json.dumps(encode_array(values)))
    back = decode_array(wire)
    assert back.dtype == values.dtype and back.shape == values.shape
    assert back.tobytes() == values.tobytes()


def test_big_endian_input_is_normalised():
    values = np.array([1.5, 2.5], dtype=">f8")
    assert decode_array(encode_array(values)).tolist() == [1.5, 2.5]


def test_rejects_object_arrays_and_bad_shapes():
    with pytest.raises(ValueError):
        encode_array(np.array(["a"], dtype=object))
    wire = encode_array(np.arange(4.0))
    wire["shape"] = [5]
    with pytest.raises(ValueError, match="shape"):
        decode_array(wire)
    wire["dtype"] = "|O"
    with pytest.raises(ValueError, match="dtype"):
        decode_array(wire)
