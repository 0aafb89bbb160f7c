# The two commands a newcomer needs: `make demo` and `make test` (see README.md).
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: env demo test lint bench

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

bench: env
	python tools/bench_train.py
