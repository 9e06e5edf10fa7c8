# dlink-rt: build the host and the plugins, run the demo, run the tests.
# Works with any CARGO_TARGET_DIR: artifacts are found through `cargo metadata`.

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
PLUGINS_TARGET_DIR = $(shell cd plugins && $(CARGO) metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
DEMO_DIR ?= $(CURDIR)/demo-data
# The plugin crates of this repository (cdylib members of plugins/); only their
# artifacts are copied, whatever else a shared CARGO_TARGET_DIR holds.
PLUGIN_NAMES = $(notdir $(patsubst %/Cargo.toml,%,$(shell grep -l cdylib plugins/*/Cargo.toml plugins/testing/*/Cargo.toml)))
# The Python peer's venv (bench/peer), outside the checkout.
PEER_VENV ?= $(HOME)/.cache/dlink-rt/peer-venv
PEER_STAMP = $(PEER_VENV)/.requirements.stamp
# The Python plugins (plugins/python/NAME/app.py), built by componentize-py from the
# peer venv into plugins/dist/NAME_py.wasm.
PY_PLUGINS = $(patsubst plugins/python/%/app.py,plugins/dist/%_py.wasm,$(wildcard plugins/python/*/app.py))

.PHONY: all build host plugins wasm-target demo test test-host test-sdk test-long fmt lint clean install release bench-peer bench-s3 peer-venv

all: build

## build: the host binary (dev profile) and every plugin (release, wasm32-wasip2) into plugins/dist
build: host plugins

host:
	$(CARGO) build --bin dlink-rt

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

plugins: wasm-target $(PY_PLUGINS)
	cd plugins && $(CARGO) build --release --target $(WASM_TARGET)
	@mkdir -p plugins/dist
	@for p in $(PLUGIN_NAMES); do cp "$(PLUGINS_TARGET_DIR)/$(WASM_TARGET)/release/$$p.wasm" plugins/dist/ || exit 1; done
	@ls -l plugins/dist/*.wasm | awk '{print "  " $$NF " (" $$5 " bytes)"}'

# A Python plugin: rebuilt when its Python files, the contract or the venv change.
.SECONDEXPANSION:
plugins/dist/%_py.wasm: $$(wildcard plugins/python/$$*/*.py) wit/pipeline.wit $(PEER_STAMP)
	@mkdir -p plugins/dist
	cd plugins/python/$* && PYTHONDONTWRITEBYTECODE=1 "$(PEER_VENV)/bin/componentize-py" -d ../../../wit -w pipeline-plugin componentize -p . app -o ../../dist/$*_py.wasm

## demo: write the example upstream tables to ./demo-data and run the four pipelines
demo: build
	DLINK_DATA=$(DEMO_DIR) $(CARGO) run -q --bin dlink-rt -- demo $(DEMO_DIR)

## test: every test of the host (with the Spark fixtures, real plugins and the Python peer) and of the SDK
test: build peer-venv test-sdk test-host

test-host:
	DLINK_PEER_PYTHON=$${DLINK_PEER_PYTHON:-$(PEER_VENV)/bin/python} DLINK_MOTO_SERVER=$${DLINK_MOTO_SERVER:-$(PEER_VENV)/bin/moto_server} $(CARGO) test --workspace

## test-long: the randomized differential test with many cases (DLINK_RANDOM_CASES, default 200)
test-long: build
	DLINK_RANDOM_CASES=$${DLINK_RANDOM_CASES:-200} $(CARGO) test --test randomized -- --nocapture

## install: the optimized (release) binary into ~/.cargo/bin (about 35 min cold on 2 cores)
install: plugins
	$(CARGO) install --path runtime --locked

## release: the optimized binaries in the target folder: dlink-rt and dlink-bench (what bench-peer and bench-s3 run)
release:
	$(CARGO) build --release -p dlink-rt -p dlink-bench

## bench-peer: the example pipelines at 100k rows, release build, against the Python peer
bench-peer: release plugins peer-venv
	DLINK_PEER_PYTHON=$(PEER_VENV)/bin/python $(CARGO) run -q --release --bin dlink-bench -- --examples --peer $(BENCH_ARGS)

test-sdk:
	cd plugins && $(CARGO) test -p dlink-plugin-sdk

## bench-s3: the example pipelines over a loopback S3 server (moto) vs local disk, with request counts
## (run.sh takes the release dlink-rt and finds dlink-bench next to it)
bench-s3: release plugins peer-venv
	bench/s3/run.sh "$$($(CARGO) metadata --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/dlink-rt" $(PEER_VENV)/bin/moto_server $(BENCH_ROWS)

## peer-venv: the venv of the Python peer (bench/peer), the S3 test server (moto) and the Python plugins' build (componentize-py) at $(PEER_VENV); a no-op when up to date
peer-venv: $(PEER_STAMP)

$(PEER_STAMP): bench/peer/requirements.txt tests/s3/requirements.txt plugins/python/requirements.txt
	@test -x "$(PEER_VENV)/bin/python" || python3 -m venv "$(PEER_VENV)"
	"$(PEER_VENV)/bin/python" -m pip install --quiet -r bench/peer/requirements.txt -r tests/s3/requirements.txt -r plugins/python/requirements.txt
	@touch "$@"

fmt:
	$(CARGO) fmt --all
	cd plugins && $(CARGO) fmt --all

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p dlink-rt --features azure,gcs -- -D warnings
	cd plugins && $(CARGO) fmt --all --check
	cd plugins && $(CARGO) clippy --release --target $(WASM_TARGET) -- -D warnings

clean:
	rm -rf plugins/dist demo-data
