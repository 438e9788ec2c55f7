# Tianyan: two commands do all the set-up on a fresh machine (Python 3 + make):
#   make demo   installs, generates the demo region, runs a whole quarter, prints a summary
#   make test   installs and runs the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: install system-deps demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tianyan demo --out demo

# Headless Chromium renders the county HTML report in the tests (Debian's package; needs root).
# Without it that one test skips with its reason.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "note: could not install chromium; the HTML rendering test will skip"; \
	  else echo "note: chromium missing and not root; the HTML rendering test will skip"; fi; }

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf demo runs .numba_cache .pytest_cache
