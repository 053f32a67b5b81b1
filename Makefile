# espnet-ot: `make demo` runs the toy demo end to end, `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install sysdeps test demo sweep study espnet bench compat mutants clean

install: $(STAMP)

# constraints.txt: the exact ESPnet / torch release this repository is tested with (setup.py only gives ranges);
# extras: test (pytest, POT) and toy (the toy world of make demo / sweep / study and of the tests)
$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "pip>=23,<24" "setuptools<74" wheel
	$(PY) -m pip install -c constraints.txt -e ".[test,toy]"
	touch $(STAMP)

# sclite, sox and a CJK font (Debian packages sctk, sox, fonts-noto-cjk): installed when root and missing
sysdeps:
	@bash .ci/system_deps.sh

# lint and format (ruff.toml), the test suite, then the plugin installed into an environment holding another ESPnet release (make compat,
# ~2-3 min: needs PyPI; without it a loud skip, under CI=true a failure)
CI_ESPNET ?= 202506
test: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
	$(PY) -m pytest -q --durations=15 tests
	BASE_PYTHON=$(PY) .ci/check_espnet_release.sh $(CI_ESPNET)

demo: $(STAMP)
	$(PY) -m espnet_ot.bin.demo

# The toy study: first the dev-only sweep (11 trainings), then 3 seeds x 4 systems + 2 controls (espnet_ot/toy/conf,
# which carries the dev-chosen settings); hours on 2 cores, resumable: rerun to go on
sweep: $(STAMP)
	$(PY) -m espnet_ot.bin.sweep

study: $(STAMP)
	$(PY) -m espnet_ot.bin.study

# ESPnet's egs2/TEMPLATE/asr1 for the recipe: $$ESPNET_ROOT if set, else a sparse clone of the
# ESPnet tag matching the installed espnet into ~/.cache/espnet-ot/espnet (needs the internet).
espnet: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" egs2/aishell_ot/asr1/local/setup_espnet.sh --clone

# the plugin installed into an environment holding another ESPnet release (an overlay venv on .venv; needs PyPI):
# pip must keep that espnet/torch; registration, 1 epoch of asr_train (TOT) and Speech2Text must pass. CI runs it.
ESPNET ?= 202509
compat: $(STAMP)
	BASE_PYTHON=$(PY) .ci/check_espnet_release.sh $(ESPNET)

# Mutation check (not in CI, ~10-30 min on 2 cores): plants known bugs one at a time in a temporary copy of
# espnet_ot, runs each bug's own tests and the fast mechanism tests on it and reports killed / SURVIVED / not applied.
mutants: $(STAMP)
	$(PY) tests/mutants.py

bench: $(STAMP)
	$(PY) -m espnet_ot.bench solvers

clean:
	rm -rf build *.egg-info .pytest_cache
