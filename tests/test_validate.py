"""sgdnoise.validate: every check returns the (converted) value or names the argument,
the value and what is allowed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdnoise import validate as V


def test_checks_return_converted_values():
    assert V.check_positive_int("n", np.int64(3)) == 3 and type(V.check_positive_int("n", 3)) is int
    assert V.check_positive("lr", "0.5") == 0.5
    assert V.check_positive("eps", 0, allow_zero=True) == 0.0
    assert V.check_choice("kind", "a", ("a", "b")) == "a"
    A = torch.eye(2)
    assert V.check_matrix("A", A, square=True) is A
    assert V.check_vector("v", torch.ones(3), 3).shape == (3,)


@pytest.mark.parametrize("call, words", [
    (lambda: V.check_positive_int("steps", 0), ["steps", "0", ">= 1"]),
    (lambda: V.check_positive_int("steps", True), ["steps", "True", "integer"]),
    (lambda: V.check_positive("lr", -1.0), ["lr", "-1.0"]),
    (lambda: V.check_positive("lr", float("nan")), ["lr", "nan"]),
    (lambda: V.check_choice("kind", "c", ("a", "b")), ["kind", "'c'", "'a'"]),
    (lambda: V.check_matrix("A", torch.ones(2, 3), square=True), ["A", "(2, 3)"]),
    (lambda: V.check_vector("v", torch.ones(3), 4), ["v", "4"]),
])
def test_errors_name_argument_value_and_allowed(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for w in words:
        assert w in str(err.value), (w, str(err.value))
