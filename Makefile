# Two commands on a fresh machine: `make demo` and `make test` (both set up .venv first).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-out

.PHONY: setup demo test test-fast bench dist clean

setup: $(STAMP)

# Recreated when missing or when requirements.txt changed since the last install. No pip cache:
# torch's CUDA wheels would sit on disk twice (cache and venv), and a CI disk once ran out doing so.
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir --upgrade "pip<25"
	$(PY) -m pip install --quiet --no-cache-dir -r requirements.txt
	$(PY) -c "import dgl, torch, faiss, pyspark, pyarrow; print('env ok: torch', torch.__version__, 'dgl', dgl.__version__)"
	@touch $(STAMP)

demo: setup
	$(PY) bench/demo.py --out $(DEMO_DIR)

# Two workers, a module each at a time (tests/conftest.py); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope tests

test-fast: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope tests -m "not slow"

bench: setup
	$(PY) bench/run_all.py

# The wheel, the --py-files zip and the spark-submit entry point, into dist/ (bin/make_dist.py).
dist: setup
	$(PY) bin/make_dist.py --out dist

clean:
	rm -rf $(DEMO_DIR) .pytest_cache dist build
