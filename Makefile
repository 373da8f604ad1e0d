# The two commands of the README:
#   make run    install what is needed, then run the milter on the built-in default store
#   make test   install what is needed, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# What pip builds: a change to any of these installs (and compiles) again.
BUILT  := pyproject.toml setup.py regfd/scan/_wordset.c
STAMP  := $(VENV)/.installed-$(shell cat $(BUILT) | cksum | cut -d' ' -f1)
CONFIG ?= config/regfd.toml
PYTEST_ARGS ?=

.PHONY: run test deps bench clean deb

run: deps
	$(BIN)/regfd --config $(CONFIG) milter

test: deps
	@bash deploy/install-system-deps.sh test
	$(BIN)/ruff check regfd tests bench tools
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

deps: $(STAMP)

$(STAMP): $(BUILT)
	@bash deploy/install-system-deps.sh run
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[milter,test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# The Debian package (deploy/deb/build-deb.sh; deploy/README.md, "Install from the Debian package").
deb:
	bash deploy/deb/build-deb.sh --out dist

bench: deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache dist
