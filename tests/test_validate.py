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
    assert V.check_positive_int("depth", 0, allow_zero=True) == 0
    assert V.check_choice("kind", "a", ("a", "b")) == "a"
    A = torch.eye(2)
    assert V.check_matrix("A", A, square=True) is A
    assert V.check_vector("v", torch.ones(3), 3).shape == (3,)


@pytest.mark.parametrize("call, words", [
    (lambda: V.check_positive_int("steps", 0), ["steps", "0", ">= 1"]),
    (lambda: V.check_positive_int("steps", True), ["steps", "True", "integer"]),
    (lambda: V.check_positive_int("depth", -1, allow_zero=True), ["depth", "-1", ">= 0"]),
    (lambda: V.check_positive_int("depth", 1.5, allow_zero=True), ["depth", "1.5", "integer"]),
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


# ----------------------------------------------------------- issue 17: values and folders


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), "inf", float("nan")])
def test_check_positive_refuses_non_finite_numbers(value):
    with pytest.raises(ValueError, match="finite"):
        V.check_positive("lr", value)
    with pytest.raises(ValueError, match="finite"):
        V.check_positive("lr", value, allow_zero=True)


def test_upper_bounds_are_stated():
    assert V.check_positive_int("epochs", 100, high=100) == 100
    with pytest.raises(ValueError, match=r"epochs must be <= 100 .*got 101"):
        V.check_positive_int("epochs", 101, high=100)
    with pytest.raises(ValueError, match=r"lr must be <= 10.0, got 11"):
        V.check_positive("lr", 11, high=10.0)


def test_check_finite_counts_the_bad_entries():
    t = torch.ones(3, 4)
    assert V.check_finite("x", t) is t
    t[0, 1], t[2, 2] = float("nan"), float("-inf")
    with pytest.raises(ValueError, match=r"x holds 2 non-finite values? \(NaN or ±inf\)"):
        V.check_finite("x", t)
    assert V.check_finite("labels", torch.arange(3)).dtype == torch.int64  # integers pass


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_count_nonfinite_finds_one_bad_entry_and_counts_exactly(bad):
    t = torch.randn(1000, dtype=torch.float32)
    assert V.count_nonfinite(t) == 0
    t[417] = bad
    assert V.count_nonfinite(t) == 1
    t[3] = float("nan")
    assert V.count_nonfinite(t) == 2


def test_count_nonfinite_passes_finite_entries_whose_sum_overflows():
    t = torch.full((10,), 3e38, dtype=torch.float32)  # each finite, the float32 sum is inf
    assert not torch.isfinite(t.sum())
    assert V.count_nonfinite(t) == 0
    assert V.check_finite("x", t) is t
    assert V.count_nonfinite(torch.arange(5)) == 0  # integers
    assert V.count_nonfinite(torch.empty(0)) == 0


def test_check_output_dir_creates_probes_and_refuses(tmp_path, monkeypatch):
    import tempfile

    out = V.check_output_dir("--out", tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []  # the probe file is gone
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for bad in (blocker, blocker / "sub"):
        with pytest.raises(ValueError) as err:
            V.check_output_dir("--out", bad)
        assert "--out" in str(err.value) and str(blocker) in str(err.value)
        assert "\n" not in str(err.value)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(ValueError, match="not writable.*Permission denied"):
        V.check_output_dir("--out", tmp_path)
