# cdn: a video CDN edge on Pingora. `make run` runs it; `make test` tests it.
SHELL := /bin/bash
CARGO ?= cargo
MEDIA ?= media

.PHONY: help run build sample deps e2e-deps test lint bench-origin bench-proxy clean

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

e2e-deps: ## install what the browser tests need: Chromium, ffmpeg, Node.js, and e2e/'s pinned npm packages
	@scripts/ensure-packages.sh chromium:chromium ffmpeg:ffmpeg node:nodejs npm:npm
	@cd e2e && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund; }

test: deps e2e-deps ## run every test: unit, integration (real processes on 127.0.0.1), then browser tests
	$(CARGO) test --workspace --all-targets
	cd e2e && node --test --test-concurrency=1

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench-origin: build ## cdn-origin vs nginx serving the same files (prints the ratio)
	@scripts/ensure-packages.sh nginx:nginx-light wrk:wrk curl:curl
	@bench/origin.sh

bench-proxy: build ## direct vs cdn-proxy vs nginx vs HAProxy over the same origins (needs the load kit, BENCH_KIT)
	@scripts/ensure-packages.sh nginx:nginx-light haproxy:haproxy wrk:wrk curl:curl
	@bench/proxy.sh

clean: ## remove build output
	$(CARGO) clean
