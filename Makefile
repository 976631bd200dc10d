# cdn: a video CDN edge on Pingora. `make run` runs it; `make test` tests it.
SHELL := /bin/bash
CARGO ?= cargo
MEDIA ?= media

.PHONY: help run build sample deps web-deps e2e-deps test lint prometheus bench-origin bench-proxy clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: ## install missing system packages (apt-get, when root) or name them
	@scripts/ensure-packages.sh cc:gcc cmake:cmake curl:curl

build: deps ## build every binary in release mode
	$(CARGO) build --release --workspace

sample: ## make $(MEDIA)/sample.mp4 with ffmpeg if $(MEDIA) has no video
	@scripts/make-sample.sh $(MEDIA)

web-deps: ## install the dashboard page's Chart.js from dashboard/package-lock.json
	@scripts/ensure-packages.sh node:nodejs npm:npm
	@cd dashboard && { [ -f node_modules/chart.js/dist/chart.umd.js ] || npm ci --no-audit --no-fund; }

run: build sample web-deps ## run the whole system locally in the foreground (Ctrl-C stops it)
	@MEDIA=$(MEDIA) scripts/run-local.sh

e2e-deps: web-deps ## install what the browser and Prometheus tests need (Chromium, ffmpeg, Prometheus, pinned npm packages)
	@scripts/ensure-packages.sh chromium:chromium ffmpeg:ffmpeg prometheus:prometheus
	@cd e2e && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund; }

test: deps e2e-deps ## run every test: unit, integration (real processes on 127.0.0.1), then browser tests
	$(CARGO) test --workspace --all-targets
	cd e2e && node --test --test-concurrency=1

prometheus: ## run Prometheus (Debian's package) with prometheus.yml against `make run`; UI on :9090
	@scripts/ensure-packages.sh prometheus:prometheus
	prometheus --config.file=prometheus.yml --storage.tsdb.path=$${TMPDIR:-/tmp}/cdn-prometheus \
	  --web.listen-address=127.0.0.1:9090

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
