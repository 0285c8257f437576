# sgdnoise: `make book` builds the executed book, `make test` runs every check.
# Both create and fill .venv themselves (idempotent: a no-op when pyproject.toml is unchanged).

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.sgdnoise-installed
PROFILE ?= default
NAME    ?=
BUDGET  ?= 7200
JOBS    ?= 2

.PHONY: setup test test-fast lint book chapter publish bench data midscale clean help

help:
	@echo "make book [PROFILE=smoke|default|full] [JOBS=2]  execute every chapter (JOBS at once) and build book/_build/html"
	@echo "make chapter NAME=ch01_lemma1 [PROFILE=...]  execute one chapter"
	@echo "make publish [PROFILE=...]  build the book and write one archive of the site"
	@echo "make data        fetch and verify CIFAR-10 into data/ (or say what to do offline)"
	@echo "make test        unit tests, every chapter with the smoke profile, book build, browser test"
	@echo "make test-fast   unit tests only"
	@echo "make lint        ruff"
	@echo "make bench       benchmarks (ratios measured in one run)"
	@echo "make midscale [BUDGET=seconds]  train chapter 8's mid-scale CPU runs for BUDGET s (one thread; resumable)"
	@echo "make clean       remove build outputs (keeps .venv and data/)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[book,dev]'
	@touch $@

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not book and not browser and not slow"

lint: setup
	$(PY) -m ruff check src tests book benchmarks

book: setup
	$(PY) book/build.py --profile $(PROFILE) --jobs $(JOBS)

chapter: setup
	@test -n "$(NAME)" || (echo "usage: make chapter NAME=<chapter> [PROFILE=...]"; exit 2)
	$(PY) book/build.py --profile $(PROFILE) --only $(NAME) --no-html

publish: setup
	$(PY) book/build.py --profile $(PROFILE) --jobs $(JOBS) --publish

data: setup
	$(PY) -m sgdnoise.data data

bench: setup
	$(PY) benchmarks/run_all.py

# Chapter 8 at mid scale on the CPU (plan_midscale.yaml): the highest-priority runs without a
# record that fit in BUDGET wall-clock seconds, one thread, records in data/results/ch08_midscale/.
# Safe to interrupt (Ctrl-C, or SIGTERM to the whole process group: a signal to make alone does
# not reach the sweep): finished runs have their record, the run in progress resumes from its
# last evaluation's checkpoint at the next `make midscale`. `make book` never trains these.
midscale: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m sgdnoise.sweep \
		book/params/ch08_resnet_sweep/plan_midscale.yaml --out data/results/ch08_midscale \
		--budget $(BUDGET)

clean:
	rm -rf book/_build .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
