# The two commands a newcomer needs: `make demo` and `make test` (see README.md);
# `make test-fast` skips the tests marked slow (zoo learning tests, TorchX end to end, compile).
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: env demo test test-fast lint bench

$(VENV)/.installed: pyproject.toml tools/setup_env.py
	python3 tools/setup_env.py --venv $(VENV)
	touch $@

env: $(VENV)/.installed

demo: env
	python -m recsys_kdef.data.synthetic --config configs/demo.yaml
	torchx run -s local_cwd dist.ddp -j 1x2 --script recsys_kdef/train.py -- --config configs/demo.yaml

lint: env
	ruff check . && ruff format --check .

test: lint
	python -m pytest -q

test-fast: lint
	python -m pytest -q -m "not slow"

bench: env
	python tools/bench_train.py
