# imds-guard: the two commands a new user needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv

.PHONY: test demo lint unit venv clean

# Every test: format, lints, unit tests, the fault matrix on mocked AWS, the
# end-to-end tests against the local emulator, and the CLI.
test: venv lint
	tools/with-moto.sh cargo test --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# The tests that need no emulator.
unit:
	cargo test --lib

# The guardrail end to end on this machine: emulator, IMDSv1 launch, event
# through a local Lambda runtime, before/after and the notification.
demo: venv
	tools/with-moto.sh tools/demo.sh

# The local emulator (moto's server) and cargo-lambda, pinned, project-local.
venv: $(VENV)/.installed
$(VENV)/.installed: tools/requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/requirements-test.txt
	touch $@

clean:
	rm -rf target $(VENV)
