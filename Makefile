# mclu: `make demo` and `make test` set everything up themselves (Debian 12, as root).

VENV     := .venv
BIN      := $(VENV)/bin
SANDBOX  ?= /var/tmp/mclu-sandbox
HOSTS    ?= 3
PYTEST_ARGS ?=

.PHONY: all deps setup demo test lint unit check sandbox-up sandbox-down bench clean

all: test

# Debian packages (idempotent), then a virtual environment that sees Debian's libvirt,
# guestfs and nbd bindings (they are not on PyPI): only /usr/bin/python3 -m venv with
# --system-site-packages does, not another python3 that may come first on PATH.
# install-deps runs every time (one dpkg-query when nothing is missing): a stamp could not
# tell that a package went away.
setup: deps $(VENV)/.installed

deps:
	bash tools/install-deps

$(VENV)/.installed: pyproject.toml | deps
	# No pip: no venv, or one whose creation was interrupted; made again from scratch.
	test -x $(BIN)/pip || { rm -rf $(VENV) && /usr/bin/python3 -m venv --system-site-packages $(VENV); }
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The sandbox, its tiny template, one guest built from it (kept across runs), then the
# cluster as mclu sees it. libguestfs runs its appliance with TCG: KVM hangs it here.
# --no-login: root on a fresh machine may have no ssh key to give, and without one mclu
# would refuse the build; the demo's way in is `mclu console web1` (root, no password). With
# a key, drop it and `mclu ssh web1` works (tiny runs dropbear on the sandbox LAN).
demo: setup
	$(BIN)/mclu-sandbox up $(HOSTS)
	$(BIN)/mclu-sandbox templates tiny
	$(BIN)/mclu -c $(SANDBOX)/hosts.toml info web1 >/dev/null 2>&1 || \
	    LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg \
	    $(BIN)/mclu -c $(SANDBOX)/hosts.toml build tiny web1 --no-login
	$(BIN)/mclu -c $(SANDBOX)/hosts.toml status
	$(BIN)/mclu -c $(SANDBOX)/hosts.toml list

lint: setup
	$(BIN)/ruff format --check mclu tests bench
	$(BIN)/ruff check mclu tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest -m 'not sandbox' $(PYTEST_ARGS)

# The whole suite, cheapest first so that a broken import fails in a minute, not thirty:
# lint, the fast tests (unit, CLI on fake hosts, contract on libvirt's test driver), then
# the integration tests on the suite's own sandbox (instance 9, /var/tmp/mclu-sandbox-9:
# see tests/conftest.py), which they bring up themselves and take down again if they
# started it. The demo's sandbox (instance 0) is never touched.
# The sandbox tests run in SANDBOX_STREAMS parallel streams (pytest-xdist), each on a
# sandbox instance of its own (9, then 8: MCLU_TEST_INSTANCES), whole files to a stream
# (module fixtures and guests stay together), the files with most tests first; the streams
# share the built templates. SANDBOX_STREAMS=0 runs them in one process as before.
SANDBOX_STREAMS ?= 2
test: setup lint
	$(BIN)/pytest -m 'not sandbox' $(PYTEST_ARGS)
	$(BIN)/pytest -m sandbox -n $(SANDBOX_STREAMS) --dist loadfile --durations=25 $(PYTEST_ARGS)

sandbox-up: setup
	$(BIN)/mclu-sandbox up $(HOSTS)

sandbox-down: setup
	$(BIN)/mclu-sandbox down

bench: setup
	$(BIN)/python bench/status.py
	$(BIN)/python bench/transfer.py
	$(BIN)/python bench/build.py
	$(BIN)/python bench/build.py --ssh --runs 1
	$(BIN)/python bench/build.py --cloud-init --runs 1
	$(BIN)/python bench/build.py --cloud-init --image debian-13 --runs 1
	$(BIN)/python bench/images.py
	$(BIN)/python bench/list.py
	$(BIN)/python bench/migrate.py --runs 5

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
