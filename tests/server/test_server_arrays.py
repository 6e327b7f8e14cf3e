"""JSON numbers to arrays: the fast path for flat lists of floats (a v2 FP* tensor's
``data``) gives the same values and the same errors as the general path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kerasop_server.arrays import numeric_array
from kerasop_server.errors import ClientError


@pytest.mark.parametrize(
    "data",
    [
        [0.25, 1, 0, 1.0, 0.0, -3, 2.5e-8],  # ints and floats, with the 0s and 1s a bool could be
        [[1.5, 2], [3, 4.25]],  # nested: the general path
        [0.5, True, 0.25],  # numpy makes the lone boolean 1.0: so does the fast path
        [],
        [2**53 + 1],  # beyond float's exact integers: the same rounding either way
    ],
)
def test_flat_floats_match_the_general_path(data: list[Any]) -> None:
    fast = numeric_array(data, "input", floats=True)
    general = numeric_array(data, "input")
    np.testing.assert_array_equal(fast, general.astype(np.float64))
    assert fast.shape == general.shape


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([False, True], "got booleans"),
        ([0.5, "1.5"], "got strings"),
        ([0.5, None], "mixed or missing values"),
        ([0.5, {"x": 1}], "mixed or missing values"),
        ([0.5, [1.0]], "ragged or malformed"),
    ],
)
def test_flat_floats_refuse_what_the_general_path_refuses(data: list[Any], message: str) -> None:
    for floats in (True, False):
        with pytest.raises(ClientError, match=message):
            numeric_array(data, "input", floats=floats)
