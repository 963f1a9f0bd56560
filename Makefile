# remediator: the two commands are `make demo` and `make test`; everything else is a step of theirs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all venv system-deps demo test lint bench docs man deb schema clean

all: venv

system-deps:
	@scripts/ensure-system-deps

# The venv is rebuilt when pyproject.toml changes; the system packages are checked every time (fast).
venv: system-deps $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

demo: venv
	$(BIN)/python -m remediator.demo

# Every test runs: a systemd test or a user-namespace test that cannot run here fails with the
# reason instead of skipping (tests/require.py). A plain `pytest` run skips them.
# Two workers (most tests wait on real servers, not on the CPU), a module to one worker: a
# module's booted systemd or shared server is started once.
test: venv
	REMEDIATOR_REQUIRE=systemd,userns $(BIN)/python -m pytest -q -n 2 --durations=15

lint: venv
	$(BIN)/ruff check remediator tests
	$(BIN)/ruff format --check remediator tests
	$(BIN)/mypy

bench: venv
	$(BIN)/python -m tests.bench

# Regenerate the configuration reference from the declared options (a test fails when it is stale).
docs: venv man
	$(BIN)/remediator schema --markdown > docs/configuration.md

# Regenerate the man pages and the shell completion from the CLI's and the config's declarations
# (tests fail when they are stale).
man: venv
	$(BIN)/python -m remediator.manpage man
	$(BIN)/python -m remediator.completion completion

# The Debian package, built with Debian's own tools (debian/): build/deb/remediator_<v>_all.deb.
deb: system-deps
	scripts/build-deb build/deb

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build
