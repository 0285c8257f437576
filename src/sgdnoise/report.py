"""What ends every chapter: a provenance table (profile, parameters, versions, commit,
device, wall time, data identity)."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sgdnoise.provenance import collect


class Stopwatch:
    """Wall time since construction; ``str()`` gives e.g. ``'12.3 s'``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def __str__(self) -> str:
        return f"{self.seconds:.1f} s"


def provenance_markdown(
    profile: str,
    params: Mapping[str, Any],
    *,
    wall_time_s: float,
    data_identity: Mapping[str, Any] | None = None,
    device: str | None = None,
) -> str:
    """A Markdown table recording how the chapter's outputs were produced."""
    prov = collect(device).to_dict()
    rows = [
        ("profile", profile),
        ("parameters", "`" + json.dumps(dict(params), sort_keys=True, default=str) + "`"),
        ("sgdnoise", prov["sgdnoise_version"]),
        ("torch", prov["torch_version"]),
        ("python", prov["python_version"]),
        ("git commit", f"`{prov['git_commit']}`"),
        ("device", prov["device"]),
        ("wall time", f"{wall_time_s:.1f} s"),
        ("executed (UTC)", prov["created_utc"]),
    ]
    if data_identity is not None:
        for key, value in data_identity.items():
            rows.append((f"data: `{key}`", f"`{value}`" if "md5" in key else str(value)))
    lines = ["| what | value |", "| --- | --- |"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- verdicts

OUTCOMES = ("supported", "contradicted", "mixed", "inconclusive")


def scale_label(profile: str, identity: Mapping[str, Any] | None = None, *,
                with_size: bool = False) -> str:
    """What stands behind a laptop verdict (its ``scale``), from the data identity record:
    ``'laptop, smoke profile, synthetic data'`` (no source known: ``'laptop, smoke
    profile'``), or with ``with_size`` ``'laptop, smoke profile, synthetic N=200'``
    (source and ``n_train``)."""
    ident = identity or {}
    if with_size:
        return f"laptop, {profile} profile, {ident.get('source', '?')} N={ident.get('n_train')}"
    src = ident.get("source")
    return f"laptop, {profile} profile" + (f", {src} data" if src else "")


KINDS = ("claim about SGD", "derivation check")


@dataclass(frozen=True)
class Verdict:
    """One computed conclusion about one claim of the essay.

    - claim: the essay's claim as tested, one sentence (fixed text: what is asked).
    - outcome: one of :data:`OUTCOMES`, decided by a chapter's verdict function.
    - sentence: the computed answer with its numbers and the threshold used.
    - scale: what stands behind it, e.g. ``"laptop, default profile"`` or
      ``"recorded GPU runs (H200, 2026-11-26)"``.
    - section: the MyST label of the section that shows the evidence (``sec-ch8-decision``).
    - kind: one of :data:`KINDS`: a *derivation check* (the code matches the algebra) or a
      *claim about SGD* (an empirical statement that could have come out either way).
    - false_positive_rate, power: the decision rule's error rates measured by simulation
      (:mod:`sgdnoise.decide.harness`): how often it says "supported" when the opposite is
      true, and how often when the claim is true with the stated effect; None when not
      measured.
    - n_seeds, n_sim, rates_at: the seeds and the number of simulated data sets they were
      measured at, and one phrase naming the effect size and the spread used.

    :meth:`with_error_rates` sets the rates and appends them to the sentence, so that they
    travel wherever the sentence does.
    """

    claim: str
    outcome: str
    sentence: str
    scale: str
    section: str
    kind: str = KINDS[0]
    false_positive_rate: float | None = None
    power: float | None = None
    n_seeds: int | None = None
    n_sim: int | None = None
    rates_at: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {list(OUTCOMES)}, got {self.outcome!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        for name in ("false_positive_rate", "power"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] or None, got {value!r}")

    def rates_sentence(self) -> str:
        """``'Error rates of this rule at 3 seeds (2,000 simulated data sets each; …):
        false-positive rate 1.2%, power 64%.'``; empty when no rate was measured."""
        if self.false_positive_rate is None and self.power is None:
            return ""
        parts = [f"{name} {value:.1%}" for name, value in
                 (("false-positive rate", self.false_positive_rate), ("power", self.power))
                 if value is not None]
        seeds = f" at {self.n_seeds} seeds" if self.n_seeds is not None else ""
        sims = f"{self.n_sim:,} simulated data sets each" if self.n_sim is not None else ""
        how = "; ".join(p for p in (sims, self.rates_at) if p)
        return (f"Error rates of this rule{seeds}" + (f" ({how})" if how else "")
                + ": " + ", ".join(parts) + ".")

    def with_error_rates(self, *, false_positive_rate: float | None, power: float | None,
                         n_seeds: int, n_sim: int, rates_at: str) -> Verdict:
        """A copy with the error rates set and :meth:`rates_sentence` appended to the
        sentence."""
        out = replace(self, false_positive_rate=false_positive_rate, power=power,
                      n_seeds=n_seeds, n_sim=n_sim, rates_at=rates_at)
        return replace(out, sentence=f"{self.sentence} {out.rates_sentence()}")


VERDICTS_METADATA_KEY = "sgdnoise_verdicts"


# A symbol with a subscript written as plain text: one or two letters (Latin or Greek), an
# underscore, then one to six letters or digits, standing alone: g_B, D_ii, λ_max, B_noise,
# ηλ_max. Identifiers with a longer stem (batch_size, plan_full) or several underscores
# (lr_batch_ratio) do not match. Math in a verdict, a displayed sentence or a caption is
# written in $...$ (or, in an HTML table, with :func:`tex_html`) so that it is typeset; this
# pattern finds what was not. Python's ``re`` and JavaScript's ``RegExp`` read it alike: the
# browser check (tests/test_browser.py) runs it on the rendered pages.
PLAIN_SUBSCRIPT = (r"(?<![A-Za-z0-9_\u0370-\u03FF\/.\-])"
                   r"[A-Za-z\u0391-\u03A9\u03B1-\u03C9]{1,2}_[A-Za-z0-9]{1,6}(?![A-Za-z0-9_])")
_MATH_OR_CODE = re.compile(r"\$[^$]*\$|`[^`]*`")


def plain_subscripts(text: str) -> list[str]:
    """The subscripts that ``text`` (MyST Markdown) writes as plain text, outside ``$...$``
    math and code spans: ``plain_subscripts("g_B and $g_B$") == ["g_B"]``."""
    return re.findall(PLAIN_SUBSCRIPT, _MATH_OR_CODE.sub(" ", str(text)))


def tex_html(tex: str) -> str:
    r"""Inline math for an HTML output, e.g. a column header of a pandas ``Styler``
    (which does not escape): the book's MathJax typesets it like the inline math of the
    text. ``tex_html(r"\lambda_{\max}")``."""
    return f'<span class="math notranslate nohighlight">\\({html.escape(tex)}\\)</span>'


def markdown_cell(text: object) -> str:
    """``text`` made safe for one cell of a Markdown table: ``|`` escaped, one line."""
    return str(text).replace("|", r"\|").replace("\n", " ").strip()


def verdicts_markdown(verdicts: Sequence[Verdict]) -> str:
    """A Markdown table: claim, outcome, computed answer, scale."""
    lines = ["| claim | verdict | what the numbers say | scale |", "| --- | --- | --- | --- |"]
    for v in verdicts:
        cells = [v.claim, f"**{v.outcome}**", v.sentence, v.scale]
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def show_verdicts(chapter: str, verdicts: Sequence[Verdict]) -> None:
    """Display the chapter's verdict table in the notebook; the verdicts also travel in the
    output's metadata (key :data:`VERDICTS_METADATA_KEY`) so that the book build can gather
    every chapter's verdicts onto one page without re-running anything."""
    from IPython.display import Markdown, display

    payload = {"chapter": chapter, "verdicts": [asdict(v) for v in verdicts]}
    display(Markdown(verdicts_markdown(verdicts)),
            metadata={VERDICTS_METADATA_KEY: payload})
