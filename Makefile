# cdn: a video CDN edge on Pingora. `make run` runs it; `make test` tests it.
SHELL := /bin/bash
CARGO ?= cargo
MEDIA ?= media

.PHONY: help run build sample deps test lint bench-origin clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: ## install missing system packages (apt-get, when root) or name them
	@scripts/ensure-packages.sh cc:gcc cmake:cmake curl:curl

build: deps ## build every binary in release mode
	$(CARGO) build --release --workspace

sample: ## make $(MEDIA)/sample.mp4 with ffmpeg if $(MEDIA) has no video
	@scripts/make-sample.sh $(MEDIA)

run: build sample ## run the whole system locally in the foreground (Ctrl-C stops it)
	@MEDIA=$(MEDIA) scripts/run-local.sh

test: deps ## run every test (unit and integration, real processes on 127.0.0.1)
	$(CARGO) test --workspace --all-targets

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench-origin: build ## cdn-origin vs nginx serving the same files (prints the ratio)
	@scripts/ensure-packages.sh nginx:nginx-light wrk:wrk curl:curl
	@bench/origin.sh

clean: ## remove build output
	$(CARGO) clean
