"""What ends every chapter: a provenance table (profile, parameters, versions, commit,
device, wall time, data identity)."""

from __future__ import annotations

import html
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Protocol

import numpy as np

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


PROVENANCE_HEADER = "| what | value |"


def provenance_markdown(
    profile: str,
    params: Mapping[str, Any],
    *,
    wall_time_s: float,
    data_identity: Mapping[str, Any] | None = None,
    device: str | None = None,
) -> str:
    """A Markdown table recording how the chapter's outputs were produced: profile, every
    parameter, versions, commit, device, the chapter's wall time (the one time the book
    reports for the chapter: the reproduce page reads it from this table) and the data
    identity. No path of the machine that ran it is shown: absolute paths are rewritten by
    :func:`sgdnoise.provenance.public_text` (relative to the repository, or shortened)."""
    from sgdnoise.provenance import public_text

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
            rows.append((f"data: `{key}`", f"`{value}`" if "md5" in key else
                         fmt_number(value) if isinstance(value, bool) else str(value)))
    lines = [PROVENANCE_HEADER, "| --- | --- |"]
    lines += [f"| {k} | {public_text(str(v)).replace('|', '/')} |" for k, v in rows]
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
#: What stands behind a verdict, from the strongest evidence to the weakest: the plan's GPU
#: records, a GPU pilot, a mid-scale CPU sweep, a laptop run, a small toy problem.
SCALE_KINDS = ("GPU records", "GPU pilot", "CPU mid-scale", "laptop", "toy")
#: How a bottom line names each scale.
SCALE_PHRASES = {"GPU records": "on the recorded GPU runs", "GPU pilot": "on the GPU pilot",
                 "CPU mid-scale": "at CPU mid-scale", "laptop": "at laptop scale",
                 "toy": "on toy problems"}


def scale_kind_of(scale: str) -> str:
    """The :data:`SCALE_KINDS` entry a verdict's ``scale`` text names: ``'GPU pilot'`` when
    it says *pilot*, ``'CPU mid-scale'`` for *mid-scale*, ``'GPU records'`` for *GPU* or
    *recorded*, ``'toy'`` for *toy*, else ``'laptop'``."""
    text = str(scale).lower()
    for words, kind in ((("pilot",), "GPU pilot"),
                        (("mid-scale", "midscale", "mid scale"), "CPU mid-scale"),
                        (("gpu", "recorded"), "GPU records"), (("toy",), "toy")):
        if any(w in text for w in words):
            return kind
    return "laptop"


def shorten(text: str, max_words: int) -> str:
    """``text`` cut to its first ``max_words`` words (ending in ``…``), never inside
    ``$...$`` math."""
    words = str(text).split()
    if len(words) <= max_words:
        return " ".join(words)
    cut = " ".join(words[:max_words])
    if cut.count("$") % 2:
        cut = cut[:cut.rindex("$")].rstrip()
    return cut.rstrip(" ,;:(") + " …"


def first_sentence(text: str) -> str:
    """The first sentence of ``text``: up to the first ``.``, ``;`` or ``:`` followed by a
    space and a capital letter, outside ``$...$`` math."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "$":
            depth ^= 1
        elif (not depth and ch in ".;:" and text[i + 1:i + 2] == " "
              and text[i + 2:i + 3].isupper()):
            return text[:i + 1] if ch == "." else text[:i] + "."
    return text


class RuleRates(Protocol):
    """What a chapter's record of a rule's simulated error rates provides: the
    false-positive rate and power (None where not simulated), the seeds and simulated data
    sets they were measured at, and ``conditions()``, the truths simulated, in words."""

    false_positive: float | None
    power: float | None
    n_seeds: int
    n_sim: int

    def conditions(self) -> str: ...


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
    - topic: the claim named in a few words (``"a generalization gap at large batches"``),
      for the findings boxes and the verdicts page; empty: the claim's first words.
    - reason: the answer in one short phrase (``"no pre-registered pair recorded"``);
      empty: the first sentence of ``sentence``, shortened.
    - scale_kind: one of :data:`SCALE_KINDS`; empty: read from ``scale``
      (:func:`scale_kind_of`).

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
    topic: str = ""
    reason: str = ""
    scale_kind: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {list(OUTCOMES)}, got {self.outcome!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        for name in ("false_positive_rate", "power"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] or None, got {value!r}")
        if not self.scale_kind:
            object.__setattr__(self, "scale_kind", scale_kind_of(self.scale))
        if self.scale_kind not in SCALE_KINDS:
            raise ValueError(f"scale_kind must be one of {list(SCALE_KINDS)}, "
                             f"got {self.scale_kind!r}")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Verdict:
        """A verdict from its recorded form (``dataclasses.asdict``, as :func:`show_verdicts`
        stores it); keys it does not know are ignored, so older records still load."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})

    def short_claim(self) -> str:
        """:attr:`topic`, else the claim's first words."""
        return self.topic or shorten(first_sentence(self.claim), 14)

    def short_reason(self) -> str:
        """:attr:`reason`, else the first sentence of :attr:`sentence`, shortened."""
        return self.reason or shorten(first_sentence(self.sentence), 28)

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

    def rates_brief(self) -> str:
        """``'false positives 1.3%, power 64%'`` (what was measured), or empty."""
        parts = [f"{name} {value:.1%}" for name, value in
                 (("false positives", self.false_positive_rate), ("power", self.power))
                 if value is not None]
        return ", ".join(parts)

    def with_error_rates(self, *, false_positive_rate: float | None, power: float | None,
                         n_seeds: int, n_sim: int, rates_at: str) -> Verdict:
        """A copy with the error rates set and :meth:`rates_sentence` appended to the
        sentence."""
        out = replace(self, false_positive_rate=false_positive_rate, power=power,
                      n_seeds=n_seeds, n_sim=n_sim, rates_at=rates_at)
        return replace(out, sentence=f"{self.sentence} {out.rates_sentence()}")

    def with_rates(self, rates: RuleRates) -> Verdict:
        """:meth:`with_error_rates` from a rule's simulated rates record (its
        ``false_positive``, ``power``, ``n_seeds``, ``n_sim`` and ``conditions()``)."""
        return self.with_error_rates(false_positive_rate=rates.false_positive,
                                     power=rates.power, n_seeds=rates.n_seeds,
                                     n_sim=rates.n_sim, rates_at=rates.conditions())


# --------------------------------------------------------------------- bottom lines


def count_noun(n: int, one: str, many: str) -> str:
    """``'1 run'``, ``'2,048 runs'``: a count with the right form of its noun."""
    return f"{n:,} {one if n == 1 else many}"


def join_words(parts: Sequence[str]) -> str:
    """``'a'``, ``'a and b'``, ``'a, b and c'`` (empty parts left out)."""
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _named(verdicts: Sequence[Verdict], limit: int = 3) -> str:
    """`` (topic; topic; 2 more)``: the verdicts' topics (those that have one), or empty:
    a claim without a topic is counted, not named (its full text is too long for a bottom
    line)."""
    names = [v.topic for v in verdicts if v.topic]
    if not names:
        return ""
    more = len(verdicts) - min(len(names), limit)
    return " (" + "; ".join(names[:limit]) + (f"; {more} more" if more > 0 else "") + ")"


def _claims_phrase(claims: Sequence[Verdict]) -> str:
    """What the claims about SGD of one scale came to, decided outcomes named."""
    n = len(claims)
    decided = [(o, [v for v in claims if v.outcome == o]) for o in OUTCOMES[:3]]
    decided = [(o, vs) for o, vs in decided if vs]
    if not decided:
        return ("the claim about SGD could not be decided" if n == 1 else
                f"none of the {n} claims about SGD could be decided")
    undecided = sum(v.outcome == "inconclusive" for v in claims)
    parts = [f"{len(vs)} {o}{_named(vs)}" for o, vs in decided]
    parts += [f"{undecided} undecided"] if undecided else []
    if n == 1:
        return f"the claim about SGD is {decided[0][0]}{_named(decided[0][1])}"
    return f"of {n} claims about SGD, {join_words(parts)}"


def _checks_phrase(checks: Sequence[Verdict]) -> str:
    bad = [v for v in checks if v.outcome != "supported"]
    if not bad:
        return ("the derivation check holds" if len(checks) == 1
                else f"all {len(checks)} derivation checks hold")
    return f"{len(checks) - len(bad)} of {len(checks)} derivation checks hold{_named(bad)}"


def bottom_line(verdicts: Sequence[Verdict]) -> str:
    """A chapter's bottom line in one sentence, computed from its verdicts (never typed).

    Per scale (:data:`SCALE_KINDS`, strongest first): the claims about SGD counted by
    outcome, the decided ones named by :meth:`Verdict.short_claim` (three at most per
    outcome), and whether the derivation checks hold, the failing ones named; the scales
    joined by ``;``. ``'At laptop scale, of 3 claims about SGD, 1 supported (noise grows
    with η/B) and 2 undecided; all 4 derivation checks hold.'``"""
    if not verdicts:
        return "No computed verdict."
    groups = []
    for kind in SCALE_KINDS:
        group = [v for v in verdicts if v.scale_kind == kind]
        if not group:
            continue
        claims = [v for v in group if v.kind == KINDS[0]]
        checks = [v for v in group if v.kind == KINDS[1]]
        phrases = ([_claims_phrase(claims)] if claims else []) + (
            [_checks_phrase(checks)] if checks else [])
        groups.append(f"{SCALE_PHRASES[kind]}, " + ", and ".join(phrases))
    text = "; ".join(groups)
    return text[0].upper() + text[1:] + "."


def scales_of(verdicts: Sequence[Verdict]) -> list[str]:
    """The :data:`SCALE_KINDS` behind ``verdicts``, strongest first."""
    present = {v.scale_kind for v in verdicts}
    return [k for k in SCALE_KINDS if k in present]


FINDINGS_METADATA_KEY = "sgdnoise_findings"
_FINDINGS_PENDING = ("*The findings of this chapter are computed from its verdicts at the "
                     "end of the chapter; this box is replaced when they are.*")


def findings_record(chapter: str, verdicts: Sequence[Verdict],
                    notes: Sequence[str] = ()) -> dict[str, Any]:
    """What a findings box shows, as plain data: the chapter, its scales, its bottom line
    (:func:`bottom_line`), the sections that hold the evidence and ``notes`` (computed
    sentences the chapter adds, e.g. what is and is not recorded)."""
    sections = list(dict.fromkeys(v.section for v in verdicts if v.section))
    return {"chapter": chapter, "scales": scales_of(verdicts),
            "bottom_line": bottom_line(verdicts), "notes": [str(n) for n in notes],
            "sections": sections}


def findings_markdown(record: Mapping[str, Any]) -> str:
    """The findings box of :func:`findings_record` as a MyST admonition (class
    ``sgdnoise-findings``): the bottom line with its scales, the notes, and links to the
    chapter's verdicts and to the verdicts page."""
    scales = join_words(list(record.get("scales", []))) or "no verdict"
    lines = [":::{admonition} Findings", ":class: sgdnoise-findings", "",
             f"**Scale: {scales}.** {record.get('bottom_line', '')}", ""]
    lines += [f"- {markdown_cell(n)}" for n in record.get("notes", [])]
    lines += [""] if record.get("notes") else []
    sections = record.get("sections", [])
    where = join_words([f"{{ref}}`{s}`" for s in sections]) if sections else ""
    lines += [("The evidence: " + where + "; every" if where else "Every")
              + " claim with its verdict and reason: {doc}`/verdicts`.", ":::"]
    return "\n".join(lines)


def _findings_display_id(chapter: str) -> str:
    return f"sgdnoise-findings-{chapter}"


def show_findings(chapter: str) -> None:
    """Open a chapter with its findings box: call this in the cell right after the title
    and the parameters cell (tag it ``remove-input``). It shows a placeholder that
    :func:`show_verdicts` replaces, when the chapter's verdicts are computed, by the box of
    :func:`findings_markdown` (the kernel's display update: the executed notebook and the
    page hold the final box)."""
    from IPython.display import Markdown, display

    display(Markdown(_FINDINGS_PENDING), display_id=_findings_display_id(chapter),
            metadata={FINDINGS_METADATA_KEY: {"chapter": chapter, "pending": True}})


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


# --------------------------------------------------------------------------- tables

MINUS = "\u2212"
MISSING = "\u2013"  # what a table shows where there is no value


def fmt_number(x: Any, decimals: int | None = None, *, digits: int = 3,
               scale: float = 1.0, suffix: str = "") -> str:
    """One table cell as a reader should see it: ``None`` and NaN as ``–``, booleans as
    ``yes``/``no``, infinities as ``∞``, integers with thousands separators, floats (times
    ``scale``) with ``decimals`` decimals or else ``digits`` significant digits (no
    exponent between 0.001 and a million), a minus sign rather than a hyphen and never
    ``−0.00``; ``suffix`` appended to numbers (``'%'``). Anything else as ``str``."""
    if x is None:
        return MISSING
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)) and scale == 1.0:
        return f"{int(x):,}".replace("-", MINUS) + suffix
    if not isinstance(x, (float, int, np.floating, np.integer)):
        return str(x)
    v = float(x) * scale
    if math.isnan(v):
        return MISSING
    if math.isinf(v):
        return ("\u221e" if v > 0 else MINUS + "\u221e") + suffix
    if decimals is None:
        if v != 0 and not 1e-3 <= abs(v) < 1e6:
            return f"{v:.{max(digits - 1, 0)}e}".replace("-", MINUS) + suffix
        mag = math.floor(math.log10(abs(v))) if v else 0
        decimals = max(0, digits - 1 - mag)
    text = f"{v:,.{decimals}f}"
    if float(text.replace(",", "")) == 0:
        text = text.lstrip("-")
    return text.replace("-", MINUS) + suffix


_NEGATIVE_ZERO = re.compile(r"-(?=0(?:\.0*)?(?![\d.]))")


def _column_formatter(spec: Any) -> Any:
    """A cell formatter from a table format spec: a callable as it is, an int as
    ``decimals``, a format string (``'{:,.0f}'``) applied to numbers, None the default
    :func:`fmt_number`. Missing values, booleans and infinities always go through
    :func:`fmt_number`; a minus sign replaces the hyphen and ``-0`` loses its sign."""
    if callable(spec):
        return spec
    if isinstance(spec, int):
        return lambda v: fmt_number(v, spec)
    if not isinstance(spec, str):
        return fmt_number

    def by_string(v: Any) -> str:
        plain = fmt_number(v)
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(
                v, (bool, np.bool_)) or plain == MISSING or "\u221e" in plain:
            return plain
        return _NEGATIVE_ZERO.sub("", spec.format(v)).replace("-", MINUS)
    return by_string


def styled_table(df: Any, formats: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> Any:
    """A pandas ``Styler`` of ``df`` for the book: every cell through :func:`fmt_number`
    (or the column's entry of ``formats``: a callable, a number of decimals or a format
    string), column names through ``headers`` (words, or math via :func:`tex_html`), no
    index. Nothing shows as ``nan``, ``inf``, ``True``/``False`` or ``−0.00``."""
    formats = dict(formats or {})
    headers = dict(headers or {})
    cells = {c: _column_formatter(formats.get(c)) for c in df.columns}
    return (df.style.format(cells).format_index(lambda c: headers.get(c, c), axis="columns")
            .hide(axis="index"))


def show_table(df: Any, lead: str = "", *, formats: Mapping[str, Any] | None = None,
               headers: Mapping[str, str] | None = None) -> None:
    """Display ``lead`` (one sentence saying what the table shows; Markdown) and the table of
    :func:`styled_table`."""
    from IPython.display import Markdown, display

    if lead:
        display(Markdown(lead))
    display(styled_table(df, formats, headers))


def markdown_cell(text: object) -> str:
    """``text`` made safe for one cell of a Markdown table: ``|`` escaped, one line."""
    return str(text).replace("|", r"\|").replace("\n", " ").strip()


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *,
                   right: Sequence[int] = ()) -> str:
    """A Markdown pipe table: the header line, the alignment rule (columns whose index is in
    ``right`` right-aligned, the others left) and one line per row of already formatted
    cells (each through :func:`markdown_cell`)."""
    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = [headers, rule, *([markdown_cell(c) for c in row] for row in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


#: The badge (sphinx-design role) each outcome is shown with.
OUTCOME_BADGES = {"supported": "bdg-success", "contradicted": "bdg-danger",
                  "mixed": "bdg-warning", "inconclusive": "bdg-secondary"}
VERDICT_HEADERS = ("claim", "verdict", "why", "evidence")
#: The MyST label of a chapter's verdict table (:func:`show_verdicts`).
VERDICT_LABEL = "verdicts-{chapter}"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def verdict_rows(verdicts: Sequence[Verdict], *, with_scale: bool = True,
                 evidence: str = "{{ref}}`{section}`") -> list[list[str]]:
    """One row of MyST cells per verdict, for :func:`verdicts_list_table`: the claim in a
    few words (its scale first when ``with_scale``) with the full claim and the computed
    sentence behind a toggle, the outcome as a badge with the error rates where measured, the
    short reason, and the evidence link (``evidence`` formatted with the verdict's
    ``section``)."""
    rows = []
    for v in verdicts:
        rates = v.rates_brief()
        name = (f"*{v.scale_kind}:* " if with_scale else "") + _one_line(v.short_claim())
        toggle = ["", "::::{dropdown} full claim and numbers",
                  _one_line(v.claim), "", _one_line(v.sentence), "::::"]
        rows.append([
            "\n".join([name, *toggle]),
            f"{{{OUTCOME_BADGES[v.outcome]}}}`{v.outcome}`" + (f"\n\n{rates}" if rates else ""),
            _one_line(v.short_reason()),
            evidence.format(section=v.section) if v.section else "–"])
    return rows


def verdicts_list_table(rows: Sequence[Sequence[str]],
                        headers: Sequence[str] = VERDICT_HEADERS) -> str:
    """A MyST ``list-table`` (class ``sgdnoise-verdicts``, fixed column widths so that it
    fits the text column) of ``rows``; a cell may hold several lines (a toggle)."""
    def cell(text: str, first: bool) -> list[str]:
        lines = str(text).split("\n")
        head = ("* - " if first else "  - ") + lines[0]
        return [head] + [("    " + line) if line else "" for line in lines[1:]]

    out = [":::::{list-table}", ":header-rows: 1", ":widths: 34 17 35 14",
           ":class: sgdnoise-verdicts", ""]
    for i, row in enumerate([list(headers), *rows]):
        for j, text in enumerate(row):
            out += cell(text, j == 0)
        del i
    return "\n".join(out + [":::::"])


def verdicts_markdown(verdicts: Sequence[Verdict]) -> str:
    """The chapter's verdicts as a table (:func:`verdicts_list_table`): the claim in a few
    words, the outcome (with the error rates where measured), the reason and a link to the
    evidence; the full claim and the computed sentence behind a toggle."""
    return verdicts_list_table(verdict_rows(verdicts))


def show_verdicts(chapter: str, verdicts: Sequence[Verdict], notes: Sequence[str] = ()
                  ) -> None:
    """Display the chapter's verdict table in the notebook; the verdicts also travel in the
    output's metadata (key :data:`VERDICTS_METADATA_KEY`) so that the book build can gather
    every chapter's verdicts onto one page without re-running anything. The findings box
    that :func:`show_findings` opened the chapter with is filled in (with ``notes``, computed
    sentences such as what is and is not recorded); without one nothing else is shown."""
    from IPython.display import Markdown, display, update_display

    payload = {"chapter": chapter, "verdicts": [asdict(v) for v in verdicts]}
    label = VERDICT_LABEL.format(chapter=chapter)  # the landing page links here
    display(Markdown(f"({label})=\n\n{verdicts_markdown(verdicts)}"),
            metadata={VERDICTS_METADATA_KEY: payload})
    record = findings_record(chapter, verdicts, notes)
    update_display(Markdown(findings_markdown(record)), display_id=_findings_display_id(chapter),
                   metadata={FINDINGS_METADATA_KEY: record})
