# The two commands of README.md: `make demo` and `make test`. Each sets up the virtual
# environment by itself (scripts/venv.sh) on first use.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
.PHONY: demo demo-cli test weights splits

demo:
	@py=$$(scripts/venv.sh)
	$$py app.py $(DEMO_ARGS)

demo-cli:
	@py=$$(scripts/venv.sh)
	$$py -m mammo predict --pipeline cascade --examples --out demo_out

test:
	@py=$$(scripts/venv.sh)
	$$py -m pytest $(PYTEST_ARGS)

splits:
	@py=$$(scripts/venv.sh)
	$$py splits/make_splits.py

weights:
	@py=$$(scripts/venv.sh)
	$$py -m mammo weights --fetch
