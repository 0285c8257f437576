"""The examples in the public docstrings run as doctests (float64, deterministic, fast)."""

from __future__ import annotations

import doctest
import importlib

import pytest

# module -> the public objects whose docstrings must hold an example
DOCUMENTED = {
    "sgdnoise.grads": ["per_example_grads", "grads_nbytes"],
    "sgdnoise.covariance": ["noise_scale", "minibatch_covariance"],
    "sgdnoise.curvature": ["HessianOperator"],
    "sgdnoise.noise.optimizer": ["NoisySGD"],
    "sgdnoise.decide.pvalues": ["holm"],
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("module_name", sorted(DOCUMENTED))
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder()
    tests = {t.name.rsplit(".", 1)[-1]: t for t in finder.find(module) if t.examples}
    missing = [name for name in DOCUMENTED[module_name] if name not in tests]
    assert not missing, f"{module_name}: no docstring example for {missing}"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests.values():
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{module_name}: {result.failed} doctest example(s) failed"


def test_a_wrong_example_fails():
    """The runner above can fail: a docstring whose example is wrong is reported."""

    def wrong():
        """>>> 1 + 1
        3
        """

    (test,) = doctest.DocTestFinder().find(wrong, "wrong", globs={})
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=lambda _text: None)
    assert runner.summarize(verbose=False).failed == 1
