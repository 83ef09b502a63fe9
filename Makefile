# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
.PHONY: demo test bootstrap lint
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

bootstrap:
	@./scripts/bootstrap

demo: bootstrap
	@./scripts/demo

test: bootstrap
	@.venv/bin/python -m pytest -q $(PYTEST_ARGS)

lint: bootstrap
	@.venv/bin/python -m ruff check .
	@.venv/bin/python -m mypy
