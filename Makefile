# Developer commands. Run them inside the environment you installed into (see README.md).
PYTHON ?= python
SOURCES = streamer tests fakes bench examples setup.py mkdocs_hooks.py

.PHONY: install run test pytest lint format typecheck compile pure docs bench bench-quick bench-aggregator bench-fanout

install:  ## install streamer with its development tools (editable)
	$(PYTHON) -m pip install -e ".[dev,vn]"

compile:  ## compile the kline core in place with mypyc (pip install -e does it too); again after editing it
	$(PYTHON) setup.py -q build_ext --inplace

pure:  ## remove the compiled modules: the same package as plain Python
	rm -f streamer/*.so streamer/exchanges/*.so streamer/exchanges/binance/*.so

run:  ## run the service from STREAMER_* variables and .env
	$(PYTHON) -m streamer

test: lint typecheck pytest  ## everything CI checks

pytest:
	$(PYTHON) -m pytest

docs:  ## the docs site in site/ (warnings are errors)
	$(PYTHON) -m mkdocs build --strict

lint:
	$(PYTHON) -m ruff format --check $(SOURCES)
	$(PYTHON) -m ruff check $(SOURCES)

format:
	$(PYTHON) -m ruff format $(SOURCES)
	$(PYTHON) -m ruff check --fix $(SOURCES)

typecheck:
	$(PYTHON) -m mypy

bench:  ## end to end against bare clients and cryptofeed (needs the bench extra; ~15 min)
	$(PYTHON) -m bench.run

bench-quick:  ## the same with 1 and 100 symbols and short runs (~5 min)
	$(PYTHON) -m bench.run --quick --out bench/results/quick

bench-aggregator:  ## in-process parse + aggregate throughput
	$(PYTHON) bench/aggregator_bench.py

bench-fanout:  ## in-process serialise + redis + websocket cost per record
	$(PYTHON) bench/fanout_bench.py
