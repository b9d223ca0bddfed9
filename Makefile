# The two commands that matter on a fresh machine:
#   make demo   set everything up, then run the main job on the built-in default
#   make test   set everything up, then run the test suite
# Both create (or reuse) the virtual environment in .venv; the install is skipped while
# requirements.txt and pyproject.toml are unchanged.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.echo-edge-installed

.PHONY: setup sysdeps demo test bench clean litert

setup: sysdeps $(STAMP)

# Debian packages the tests use: headless Chromium renders report.html, the JDK compiles and runs
# the Android bridge's pure-Java core. Installed only when missing.
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
sysdeps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v javac >/dev/null 2>&1 || missing="$$missing default-jdk-headless"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# tf_keras without its dependencies, or it pulls the full tensorflow beside tensorflow-cpu
	$(PY) -m pip install -q --no-deps tf_keras==2.21.0
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

# litert-torch (the second TFLite route, `--format tflite-litert`) in its own environment: it
# cannot share .venv (requirements-litert.txt says which pin clashes). About 2 GB, 2.5 minutes on a
# fresh machine (measured without a pip cache); `make test` builds it so that the route's
# conversion tests run (they skip only where it is absent), `make demo` does not need it.
LITERT_VENV := .venv-litert
LITERT_STAMP := $(LITERT_VENV)/.echo-edge-installed

litert: $(LITERT_STAMP)

$(LITERT_STAMP): requirements-litert.txt requirements-litert.lock
	@test -x $(LITERT_VENV)/bin/python || $(PYTHON) -m venv $(LITERT_VENV)
	$(LITERT_VENV)/bin/python -m pip install -q -r requirements-litert.txt -c requirements-litert.lock
	@touch $(LITERT_STAMP)

demo: setup
	$(VENV)/bin/echo-edge run

test: setup litert
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_synth.py
	$(PY) bench/bench_eager.py

clean:
	rm -rf $(VENV) $(LITERT_VENV) .pytest_cache
