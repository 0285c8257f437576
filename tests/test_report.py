"""Verdict records and their table."""

from __future__ import annotations

import pytest

from sgdnoise.report import Verdict, verdicts_markdown


def test_verdict_outcome_checked_and_table_escapes_pipes():
    v = Verdict("a | b", "supported", "x = 1", "laptop", "sec-x")
    table = verdicts_markdown([v])
    assert r"a \| b" in table and "**supported**" in table
    with pytest.raises(ValueError, match="outcome must be one of"):
        Verdict("c", "true", "s", "laptop", "sec-x")


def test_scale_label_formats():
    from sgdnoise.report import scale_label

    ident = {"source": "synthetic", "n_train": 200}
    assert scale_label("smoke", ident) == "laptop, smoke profile, synthetic data"
    assert scale_label("default") == "laptop, default profile"
    assert scale_label("smoke", ident, with_size=True) == "laptop, smoke profile, synthetic N=200"
