# fiberflow: the two commands a fresh machine needs are `make demo` and `make test`.
# Everything is installed here: a .venv (PyPI) plus the Debian packages real components need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fiberflow-installed
DEMO   ?= demo
# two workers, one module each at a time (module fixtures build one production each); the long
# workflow modules start first (tests/conftest.py)
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder --durations=15

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser graphviz tools demo test dag bench-workflow bench-night bench-redrock validate-redshifts clean-demo help

help:
	@echo "make demo   # set up .venv and run the demo production under ./$(DEMO)/"
	@echo "make test   # set up .venv and run the test suite"

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-binary connection_pool -e '.[test,mpi,postgres]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/fiberflow demo --out $(DEMO)

# Debian's chromium + chromedriver: the QA pages are tested in a real browser
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  ( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null ) || \
	  echo "make: chromium could not be installed; the browser tests will skip"

# Debian's graphviz (fiberflow dag), Slurm + munge (the tests start a real single-node Slurm
# with scripts/local-slurm and run a night through the slurm executor) and PostgreSQL (the tests
# start a server for the site QC1 database)
graphviz:
	@command -v dot >/dev/null 2>&1 || \
	  ( $(SUDO) apt-get install -y -qq --no-install-recommends graphviz >/dev/null 2>&1 || \
	    ( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends graphviz >/dev/null ) ) || \
	  echo "make: graphviz could not be installed; the DAG drawing test will skip"

tools: graphviz
	@scripts/local-slurm install || echo "make: Slurm could not be installed; the Slurm tests will skip"
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  ( $(SUDO) apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 || \
	    ( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends postgresql >/dev/null ) ) || \
	  echo "make: PostgreSQL could not be installed; the PostgreSQL QC1 database tests will skip"

test: setup browser tools
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests

# rule graph and the first night's job DAG of the demo production, and its first science
# exposure's chain (camera-labelled nodes coloured by state), as SVG under demo/dag/
dag: setup graphviz
	$(BIN)/fiberflow dag --config $(DEMO)/config.yaml -o $(DEMO)/dag
	$(BIN)/fiberflow dag --config $(DEMO)/config.yaml --expid 182807 --camera r0 -o $(DEMO)/dag

bench-workflow: setup
	$(BIN)/python benchmarks/bench_workflow.py

# a full-size night (one petal: 500 fibers x b/r/z, 10 exposures) through the workflow on 2 cores,
# then the survey-cost model from it (benchmarks/bench_night.py, benchmarks/survey_cost.py)
bench-night: setup
	$(BIN)/python benchmarks/bench_night.py --cores 2 --json bench-night.json
	$(BIN)/python benchmarks/survey_cost.py bench-night.json

# redrock seconds and peak memory per 500 targets (one process, two MPI ranks)
bench-redrock: setup
	$(BIN)/python benchmarks/bench_redrock.py

# a larger simulated production (>= 1,000 targets) through redrock: success table and
# pipeline-induced failures against the truth (about an hour on 2 cores)
validate-redshifts: setup
	$(BIN)/python benchmarks/validate_redshifts.py

clean-demo:
	rm -rf $(DEMO)
