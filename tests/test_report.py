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
