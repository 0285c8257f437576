"""Verdict records and their table."""

from __future__ import annotations

import pytest

from sgdnoise.report import Verdict, verdicts_markdown


def test_verdict_outcome_checked_and_table_escapes_pipes():
    v = Verdict("a | b", "supported", "x = 1", "laptop", "sec-x")
    table = verdicts_markdown([v])
    # a list-table (not a pipe table): a pipe in a claim stays as written
    assert "* - *laptop:* a | b" in table and "  - {bdg-success}`supported`" in table
    with pytest.raises(ValueError, match="outcome must be one of"):
        Verdict("c", "true", "s", "laptop", "sec-x")


def test_verdict_kind_and_error_rates():
    v = Verdict("c", "supported", "The numbers.", "laptop", "sec-x")
    # backwards compatible: no rates, a claim about SGD unless said otherwise
    assert v.kind == "claim about SGD" and v.rates_sentence() == ""
    assert Verdict("c", "supported", "s", "l", "x", kind="derivation check").kind == \
        "derivation check"
    with pytest.raises(ValueError, match="kind must be one of"):
        Verdict("c", "supported", "s", "l", "x", kind="opinion")
    with pytest.raises(ValueError, match="power must be in"):
        Verdict("c", "supported", "s", "l", "x", power=1.5)
    r = v.with_error_rates(false_positive_rate=0.012, power=0.64, n_seeds=3, n_sim=2000,
                           rates_at="a gap of 3 points")
    assert (r.false_positive_rate, r.power, r.n_seeds, r.n_sim) == (0.012, 0.64, 3, 2000)
    assert r.sentence == ("The numbers. Error rates of this rule at 3 seeds (2,000 simulated "
                          "data sets each; a gap of 3 points): false-positive rate 1.2%, "
                          "power 64.0%.")
    # the rates travel in the table (and in the metadata the verdict page is built from)
    assert "false-positive rate 1.2%" in verdicts_markdown([r])
    from dataclasses import asdict

    assert asdict(r)["power"] == 0.64 and asdict(r)["kind"] == "claim about SGD"


def test_with_rates_reads_a_rates_record():
    from types import SimpleNamespace

    v = Verdict("c", "supported", "The numbers.", "laptop", "sec-x")
    rates = SimpleNamespace(false_positive=0.02, power=0.9, n_seeds=5, n_sim=400,
                            conditions=lambda: "no effect; an effect of 2 points")
    assert v.with_rates(rates) == v.with_error_rates(
        false_positive_rate=0.02, power=0.9, n_seeds=5, n_sim=400,
        rates_at="no effect; an effect of 2 points")
    assert "power 90.0%" in v.with_rates(rates).sentence


def test_scale_label_formats():
    from sgdnoise.report import scale_label

    ident = {"source": "synthetic", "n_train": 200}
    assert scale_label("smoke", ident) == "laptop, smoke profile, synthetic data"
    assert scale_label("default") == "laptop, default profile"
    assert scale_label("smoke", ident, with_size=True) == "laptop, smoke profile, synthetic N=200"


@pytest.mark.parametrize("text, found", [
    ("the gradient g_B is unbiased", ["g_B"]),
    ("D_ii ∝ H_ii^γ", ["D_ii", "H_ii"]),
    ("B_noise = 28 (S_min = 12 steps), B_simple", ["B_noise", "S_min", "B_simple"]),
    ("at 6.3e-03·λ_max; ηλ_max > 2; η λ_max", ["λ_max", "ηλ_max", "λ_max"]),
    ("model labels F_hat; E⟨p − e_y, f⟩²; |x_T| > 1; T_step", ["F_hat", "e_y", "x_T", "T_step"]),
    # math, code spans and identifiers that are not symbols pass
    ("$g_B$ and $\\lambda_{\\max}$, `n_train` and `g_B`", []),
    ("batch_size, lr_batch_ratio, plan_full.yaml, ch01_lemma1, sec-ch8_x", []),
    ("book/params/a_b.yaml, www.x_y.org, θ_{t+1}", []),
])
def test_plain_subscripts_finds_subscripts_written_as_text(text, found):
    from sgdnoise.report import plain_subscripts

    assert plain_subscripts(text) == found


def test_tex_html_is_inline_math_for_mathjax():
    from sgdnoise.report import tex_html

    assert tex_html(r"\lambda_{\max} < 2") == (
        r'<span class="math notranslate nohighlight">\(\lambda_{\max} &lt; 2\)</span>')


def test_provenance_table_writes_data_flags_in_words():
    """A boolean of the data identity reads yes/no in the provenance table, never True/False
    (the browser test fails a table cell showing a raw Python value)."""
    from sgdnoise.report import provenance_markdown

    for flag, word in ((False, "no"), (True, "yes")):
        table = provenance_markdown("smoke", {}, wall_time_s=1.0,
                                    data_identity={"official_checksums": flag, "n_train": 200})
        row = next(line for line in table.splitlines() if "official_checksums" in line)
        assert row.endswith(f"| {word} |") and str(flag) not in table, row
        assert "| 200 |" in table


def test_markdown_table_aligns_the_columns_asked_and_escapes_cells() -> None:
    from sgdnoise.report import markdown_table

    text = markdown_table(["a", "$B$"], [["x|y", 3], ["z", 4.5]], right=(1,))
    assert text.splitlines() == ["| a | $B$ |", "| --- | ---: |", "| x\\|y | 3 |",
                                 "| z | 4.5 |"]
    assert markdown_table(["a"], []).splitlines() == ["| a |", "| --- |"]
