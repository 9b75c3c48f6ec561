# Developer commands. Run them inside the environment you installed into (see README.md).
PYTHON ?= python
SOURCES = streamer tests bench examples

.PHONY: install run test pytest lint format typecheck bench

install:  ## install streamer with its development tools (editable)
	$(PYTHON) -m pip install -e ".[dev,vn]"

run:  ## run the service from STREAMER_* variables and .env
	$(PYTHON) -m streamer

test: lint typecheck pytest  ## everything CI checks

pytest:
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff format --check $(SOURCES)
	$(PYTHON) -m ruff check $(SOURCES)

format:
	$(PYTHON) -m ruff format $(SOURCES)
	$(PYTHON) -m ruff check --fix $(SOURCES)

typecheck:
	$(PYTHON) -m mypy

bench:  ## in-process aggregator throughput (numbers in README)
	$(PYTHON) bench/aggregator_bench.py
