# imds-guard: the two commands a new user needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
CHECKOV_VENV := .venv-checkov
BENCH_VENV := .venv-bench
DIST_VENV := .venv-dist
WORKFLOWS_VENV := .venv-workflows
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DIST := dist/imds-guard-$(VERSION)
# Where the Serverless Application Repository's template points its code.
ARTIFACT_BUCKET ?= imds-guard-releases

.PHONY: smoke-aws report-screenshot test demo lint unit venv sam-venv checkov-venv bench-venv dist-venv workflows-venv dist dist-check dist-lint publish template fuzz fuzz-check load bench bench-function bench-sweep bench-triggers bench-memory bench-org clean

# Every test: format, lints, unit tests, the fault matrix on mocked AWS, the
# end-to-end tests against the local emulator, and the CLI.
# Clippy, then the fuzz target's check, build into a target dir of their own,
# side by side with the test build: each spends minutes compiling the EC2
# crate on one core, so together they share the two cores instead of
# queueing for the build-dir lock. Clippy runs niced: the tests' build is
# the longer path (the build, then minutes of tests waiting on the
# single-threaded emulator), so clippy takes the cycles it leaves idle.
test: venv workflows-venv
	cargo fmt --all -- --check
	# The docs' links and anchors, docs/configuration.md against crates/domain/src/config/,
	# the README's size.
	$(PYTHON) tools/check-docs.py
	# No import circle in src/ or in the domain crate (ARCHITECTURE.md).
	$(PYTHON) tools/modgraph.py
	# The GitHub workflows: zizmor's security audits (offline: pinning,
	# permissions, injection), then GitHub's workflow schema.
	$(WORKFLOWS_VENV)/bin/zizmor --offline --persona auditor --quiet .github/workflows/
	$(WORKFLOWS_VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	# The release tooling's tests (publish.py's refusals, dist.py's compare).
	$(VENV)/bin/python -m unittest discover -s tools -p 'test_*.py'
	mkdir -p target
	{ { CARGO_TARGET_DIR=target/lint nice -n 19 cargo clippy --workspace --all-targets -- -D warnings && \
	    echo "== the fuzz target builds" && \
	    CARGO_TARGET_DIR=target/lint nice -n 19 cargo check --quiet --manifest-path fuzz/Cargo.toml; } >target/lint.log 2>&1; \
	  echo $$? >target/lint.rc; } & \
	tests=0; tools/with-moto.sh cargo test --workspace --tests || tests=$$?; wait; \
	echo "== cargo clippy --workspace --all-targets -- -D warnings"; cat target/lint.log; \
	lint=$$(cat target/lint.rc); [ "$$lint" = 0 ] || { echo "make test: clippy or the fuzz target's build failed" >&2; exit 1; }; \
	exit $$tests

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# The tests that need no emulator.
unit:
	cargo test --workspace --lib

# The guardrail end to end on this machine: emulator, IMDSv1 launch, event
# through a local Lambda runtime, before/after and the notification.
demo: venv
	tools/with-moto.sh tools/demo.sh

# The local emulator (moto's server), cargo-lambda and AWS's IAM reference
# data, pinned, project-local.
venv: $(VENV)/.installed
$(VENV)/.installed: tools/requirements-test.txt tools/requirements-iam.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/requirements-test.txt
	# AWS's IAM reference data, for the test that checks the templates' keys.
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r tools/requirements-iam.txt
	# cargo-lambda cross-compiles with zig, which the ziglang wheel ships.
	ln -sf "$$($(VENV)/bin/python -c 'import ziglang, os; print(os.path.dirname(ziglang.__file__))')/zig" $(VENV)/bin/zig
	touch $@

# Fuzz event parsing and the policy (cargo-fuzz; libFuzzer needs the
# sanitizer flags of a nightly compiler, which RUSTC_BOOTSTRAP allows here).
FUZZ_SECONDS ?= 600
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	mkdir -p fuzz/corpus/event && cp events/*.json fuzz/corpus/event/
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run event -- -max_total_time=$(FUZZ_SECONDS) -max_len=262144 -dict=$(CURDIR)/fuzz/event.dict

# The fuzz target uses the domain crate (crates/domain, no AWS SDK): `make
# test` checks that it still builds (beside clippy); CI checks it on its own too.
fuzz-check:
	cargo check --quiet --manifest-path fuzz/Cargo.toml

# The sweep's HTML report as a person sees it: headless Chromium (Debian's
# package, installed here if missing: root, so not part of `make test`,
# which checks the page's structure itself) renders a sweep of a seeded
# emulator fleet; the rendered DOM is checked and the screenshot written to
# docs/img/sweep-report.png.
report-screenshot: venv
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	tools/with-moto.sh tools/report-screenshot.sh

# The benchmarks (not part of `make test`), each printing its table:
# - the function: init time (and a bare Rust function's), first and warm
#   event latency, peak memory, AWS calls per event, the arm64 bootstrap's
#   size and zip, parse+decide per event (criterion);
# - the sweep: 1,000 and 10,000 seeded instances (BENCH_SIZES), swept by the
#   release build, by a bare boto3 loop (the emulator's floor) and by Cloud
#   Custodian's `custodian run`, each on a freshly seeded fleet.
bench: bench-function bench-sweep bench-triggers bench-memory

# Seconds from running to applied, by trigger: the event path on the
# in-memory fake with simulated delivery delays, call latencies and pending
# times (paused time; every input is an assumption, listed with its range
# in the table and in tests/integration/trigger_sim.rs).
bench-triggers:
	cargo test --test integration -- --ignored --exact trigger_sim::seconds_from_running_to_applied_by_trigger --nocapture 2>&1 | grep -E '^\|'

# DynamoDB calls and (simulated) time per 50-instance launch event: the
# event path on the in-memory fake with paused time (the assumptions are in
# tests/integration/memory_sim.rs).
bench-memory:
	cargo test --test integration -- --ignored --exact memory_sim::dynamodb_calls_and_time_per_50_instance_launch --nocapture 2>&1 | grep -E '^\||^\(simulated'

# The organization sweep fanned out at 100, 1,000 and 17,000
# account-regions: the real steps on simulated AWS with paused time (the
# assumptions are in tests/integration/org_sim.rs).
bench-org:
	cargo test --test integration -- --ignored --exact org_sim::an_organization_of_17000_account_regions_is_swept_to_the_end --nocapture 2>&1 | grep -E '^\||^\(simulated'

bench-function: venv
	rustup target add aarch64-unknown-linux-gnu
	# Two builds, not one: built together, the example's dev-dependency
	# features would change the function's own build (and bench-sweep's).
	cargo build --release --bin imds-guard-sweep --bin imds-guard-event --bin imds-guard-outputs
	cargo build --release --example bare_function
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --arm64 --bin imds-guard-sweep --bin imds-guard-event --bin imds-guard-outputs
	tools/with-moto.sh $(VENV)/bin/python tools/bench_function.py

bench-sweep: venv bench-venv
	cargo build --release --bin imds-guard
	tools/with-moto.sh $(VENV)/bin/python tools/bench_sweep.py

# Cloud Custodian, for comparison only, in a virtualenv of its own.
bench-venv: $(BENCH_VENV)/.installed
$(BENCH_VENV)/.installed: tools/requirements-bench.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/requirements-bench.txt
	touch $@

# The load benchmark: 500 launch events x 10 instances, 4 function processes,
# against the emulator; prints events/s and peak memory per process. Uses the
# release build of the event function.
load: venv
	cargo build --release --bin imds-guard-event
	IMDS_GUARD_BIN=$(CURDIR)/target/release/imds-guard-event tools/with-moto.sh \
	  cargo test --test integration -- --ignored load --nocapture

# The guard against AWS itself, in a sandbox account you name (never run by
# this project's CI; docs/proving.md): AWS_PROFILE=<profile> AWS_REGION=<r>
# IMDS_GUARD_SMOKE=yes make smoke-aws. SMOKE_PLAN=1 make smoke-aws prints the
# plan and calls nothing.
smoke-aws:
	tools/smoke-aws.sh

# The SAM templates: cfn-lint and sam validate --lint for the central stack
# (template.yaml) and the member stack (member/template.yaml, for StackSets),
# and sam build of the function (arm64, through cargo-lambda), offline. CI
# runs it after `make test`.
# checkov fails on any failed check; a check declined is declared in the
# template (Metadata.checkov.skip) with its reason. --skip-download: it asks
# Prisma Cloud for nothing.
template: venv sam-venv checkov-venv
	rustup target add aarch64-unknown-linux-gnu
	tools/sam.sh cfn-lint template.yaml member/template.yaml
	$(CHECKOV_VENV)/bin/checkov --framework cloudformation --skip-download --quiet --compact -f template.yaml -f member/template.yaml
	tools/sam.sh sam validate --lint --region us-east-1
	tools/sam.sh sam validate --lint --region us-east-1 --template member/template.yaml
	tools/sam.sh sam build --beta-features --region us-east-1

# A release (docs/releasing.md): `make template`'s bootstraps as three Lambda
# zips, the packaged templates (local zips; the Serverless Application
# Repository's, in s3://$(ARTIFACT_BUCKET)/imds-guard/$(VERSION)/), the member
# template, the command line for x86_64 Linux (static), the SBOM, LICENSE, README,
# CHANGELOG and SHA256SUMS, in $(DIST); then `dist-check`'s checks.
# The command line is static (musl, linked by cargo-lambda's zig): it runs
# on any x86_64 Linux.
dist: template dist-venv
	rustup target add x86_64-unknown-linux-musl
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --locked --target x86_64-unknown-linux-musl --bin imds-guard
	$(DIST_VENV)/bin/python tools/sbom.py target/sbom.cdx.json
	$(DIST_VENV)/bin/python tools/dist.py build $(DIST) --cli target/lambda/imds-guard/bootstrap --sbom target/sbom.cdx.json --bucket $(ARTIFACT_BUCKET)
	$(MAKE) --no-print-directory dist-lint

# What CI checks of a release, from the bootstraps `make template` already
# built (no second build; the command line is left out): the zips (one
# aarch64 ELF bootstrap each, the same bytes zipped twice), the templates
# (only files that exist; cfn-lint, sam validate --lint, checkov), the SBOM
# (CycloneDX 1.6, validated) and the checksums.
dist-check: dist-venv checkov-venv sam-venv
	$(DIST_VENV)/bin/python tools/sbom.py target/sbom.cdx.json
	$(DIST_VENV)/bin/python tools/dist.py build $(DIST) --sbom target/sbom.cdx.json --bucket $(ARTIFACT_BUCKET)
	$(MAKE) --no-print-directory dist-lint

dist-lint:
	$(DIST_VENV)/bin/python tools/dist.py check $(DIST)
	tools/sam.sh cfn-lint $(DIST)/template.packaged.yaml $(DIST)/template.sar.yaml $(DIST)/member-template.yaml
	tools/sam.sh sam validate --lint --region us-east-1 --template $(DIST)/template.packaged.yaml
	tools/sam.sh sam validate --lint --region us-east-1 --template $(DIST)/template.sar.yaml
	$(CHECKOV_VENV)/bin/checkov --framework cloudformation --skip-download --quiet --compact -f $(DIST)/template.packaged.yaml -f $(DIST)/template.sar.yaml

# Publishes $(DIST), as `make dist` made it, to the Serverless Application
# Repository, privately (docs/releasing.md): refuses without CONFIRM=yes,
# explicit credentials and a region, or when the bucket's policy does not
# limit SAR's reads to this account (aws:SourceAccount). Builds nothing.
# The bucket is named, never the default: bucket names are global, and the
# default is a name anyone may own (publish.py also sends ExpectedBucketOwner).
publish: sam-venv
	$(if $(filter file,$(origin ARTIFACT_BUCKET)),$(error make publish: name your bucket, ARTIFACT_BUCKET=..., the same as make dist's))
	CONFIRM="$(CONFIRM)" $(SAM_VENV)/bin/python tools/publish.py $(DIST) $(ARTIFACT_BUCKET)

workflows-venv: $(WORKFLOWS_VENV)/.installed
$(WORKFLOWS_VENV)/.installed: tools/requirements-workflows.txt
	$(PYTHON) -m venv $(WORKFLOWS_VENV)
	$(WORKFLOWS_VENV)/bin/pip install --quiet --disable-pip-version-check --only-binary=:all: -r tools/requirements-workflows.txt
	touch $@

dist-venv: $(DIST_VENV)/.installed
$(DIST_VENV)/.installed: tools/requirements-dist.txt
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/requirements-dist.txt
	touch $@

# SAM CLI and cfn-lint, in a virtualenv of their own (their pins clash with moto's).
sam-venv: $(SAM_VENV)/.installed
$(SAM_VENV)/.installed: tools/requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/requirements-sam.txt
	touch $@

checkov-venv: $(CHECKOV_VENV)/.installed
$(CHECKOV_VENV)/.installed: tools/requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/requirements-checkov.txt
	touch $@

clean:
	rm -rf target fuzz/target .aws-sam dist $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(BENCH_VENV) $(DIST_VENV)
