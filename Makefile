# The few verbs people type. `.ci/run` calls the same ones.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: deps demo demo-lab serve test check soak fault-matrix bench bench-smoke schema clean

deps: $(VENV)/.installed tools/node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

tools/node_modules/.installed: tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## demo: emulated Azure + Azurite + emulated NVA agent; break the design, watch it being fixed
demo: deps
	$(BIN)/python -m localenv.demo

## demo-lab: the same story with a real FRR NVA and route servers in network namespaces (root, Debian frr)
demo-lab: deps
	$(BIN)/python -m localenv.demo --lab

## serve: the Functions app's HTTP routes on 127.0.0.1:7071 over the demo world (curl it; see README)
serve: deps
	$(BIN)/python -m localenv.host --demo

## test: the whole suite (unit, integration, e2e; real FRR tests run where namespaces can be made)
test: deps
	$(BIN)/python -m pytest -q

## check: lint and types
check: deps
	$(BIN)/ruff check .
	$(BIN)/mypy

## soak: 200 passes with random faults and world changes (CI runs 40)
soak: deps
	SOAK_PASSES=200 $(BIN)/python -m pytest -q tests/e2e/test_soak.py

## fault-matrix: every fault on every stage (CI runs a reduced matrix)
fault-matrix: deps
	FAULT_MATRIX=full $(BIN)/python -m pytest -q tests/e2e/test_fault_matrix.py

bench: deps
	$(BIN)/python bench/fleet.py

bench-smoke: deps
	$(BIN)/python bench/fleet.py --smoke

schema: deps
	$(BIN)/python -m reconciler schema --write

clean:
	rm -rf $(VENV) tools/node_modules out .pytest_cache .mypy_cache .ruff_cache
