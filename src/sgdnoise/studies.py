"""Transitional: the chapter 1-3 code that lived here moved to :mod:`sgdnoise.chapters`
(``small_problems``, ``ch01_lemma1``, ``ch02_fisher_hessian``, ``ch03_gaussian_lemma2``) and
:func:`sgdnoise.stats.loglog_fit`. Only the four names other chapters still import are
re-exported; delete this module when chapters 5 and 6 import them from their new homes."""

from __future__ import annotations

from sgdnoise.chapters.ch01_lemma1 import trace_vs_batch_study
from sgdnoise.chapters.small_problems import build_small_model, load_small_problem
from sgdnoise.stats import loglog_fit

__all__ = ["build_small_model", "load_small_problem", "loglog_fit", "trace_vs_batch_study"]
