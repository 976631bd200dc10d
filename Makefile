# cdn: a video CDN edge on Pingora. `make run` runs it; `make test` tests it.
SHELL := /bin/bash
CARGO ?= cargo
MEDIA ?= media

.PHONY: help run build sample deps web-deps e2e-deps test test-local test-k8s test-docker lint prometheus \
	up down logs ps scale bench-origin bench-proxy bench-instructions bench-policies bench-streams bench-tls bench-cache bench-cold clean

# Containers: `docker compose` (v2) where it exists, else `docker-compose` (v1.29).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
PROJECT ?= cdn
# The admin API's token for the containers: made once in target/admin-token.
ifndef CDN_ADMIN_TOKEN
CDN_ADMIN_TOKEN := $(shell scripts/admin-token.sh)
endif
export CDN_ADMIN_TOKEN
# The `grafana` profile: Grafana comes up with the rest (the Docker e2e test leaves it out).
DC = COMPOSE_PROFILES=grafana $(COMPOSE) -p $(PROJECT) -f deploy/compose.yaml
SCALE ?= 3
N ?= $(SCALE)

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
	@cd e2e && { [ -d node_modules/playwright-core ] && [ -d node_modules/hls.js ] || npm ci --no-audit --no-fund; }

test: test-local test-docker ## run every test: test-local, then test-docker

test-local: deps e2e-deps ## unit, integration (real processes on 127.0.0.1), browser, Prometheus and deployment-file tests
	@scripts/ensure-packages.sh fincore:util-linux
	$(CARGO) test --workspace --all-targets
	cd e2e && node --test --test-concurrency=1
	@$(MAKE) --no-print-directory test-k8s

K8S_VENV := target/k8s-venv
test-k8s: ## offline checks of deploy/k8s (strict schemas, probes, limits, names), of the container configs and of the Prometheus rules (promtool)
	@scripts/ensure-packages.sh promtool:prometheus
	@[ -x $(K8S_VENV)/bin/kubernetes-validate ] || { python3 -m venv $(K8S_VENV) && \
	  $(K8S_VENV)/bin/pip install -q --disable-pip-version-check -r deploy/test/requirements.txt; }
	$(CARGO) build -q -p cdn-proxy
	$(K8S_VENV)/bin/python -m unittest -v deploy/test/test_k8s.py

test-docker: ## the containers for real: build, up, scale, stop an origin under load, Prometheus, down (needs root or a running Docker)
	@deploy/test/run.sh

prometheus: ## run Prometheus (Debian's package) with conf/prometheus.local.yml against `make run`; UI on :9090
	@scripts/ensure-packages.sh prometheus:prometheus
	prometheus --config.file=conf/prometheus.local.yml --storage.tsdb.path=$${TMPDIR:-/tmp}/cdn-prometheus \
	  --web.listen-address=127.0.0.1:9090

up: sample ## build the images and run proxy, $(SCALE) origins, Prometheus and Grafana in containers (http://localhost/, Grafana on http://127.0.0.1:3000/)
	$(DC) up -d --build --scale origin=$(SCALE)

down: ## stop and remove the containers
	$(DC) down --remove-orphans

logs: ## follow the containers' logs
	$(DC) logs -f --tail=100

ps: ## list the containers and their health
	$(DC) ps

scale: ## run N origins (make scale N=5); the proxy and Prometheus find them by DNS
	$(DC) up -d --no-deps --no-recreate --no-build --scale origin=$(N) origin

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench-origin: build ## cdn-origin vs nginx serving the same files (prints the ratio)
	@scripts/ensure-packages.sh nginx:nginx-light wrk:wrk curl:curl
	@bench/origin.sh

bench-proxy: build ## direct vs cdn-proxy vs bare Pingora vs nginx vs HAProxy over the same origins (needs the load kit, BENCH_KIT)
	@scripts/ensure-packages.sh nginx:nginx-light haproxy:haproxy wrk:wrk curl:curl
	$(CARGO) build --release --example bare_pingora
	@bench/proxy.sh

bench-instructions: build ## instructions per small request under callgrind, cdn-proxy vs bare Pingora (repeatable to the percent)
	@scripts/ensure-packages.sh valgrind:valgrind curl:curl
	$(CARGO) build --release --example bare_pingora
	@bench/instructions.sh

bench-tls: build ## HTTPS termination: cdn-proxy (rustls) vs nginx vs HAProxy with the same certificate, HTTP/1.1 scenarios and HTTP/2 small requests (h2load)
	@scripts/ensure-packages.sh nginx:nginx-light haproxy:haproxy wrk:wrk curl:curl h2load:nghttp2-client
	@bench/tls.sh

bench-cache: build ## the edge cache vs nginx slice + proxy_cache vs the origin direct: hit throughput, CPU per GiB, first-byte time of hits, origin offload (one hot video; a Zipf mix)
	@scripts/ensure-packages.sh nginx:nginx-light wrk:wrk curl:curl
	@bench/cache.sh

bench-cold: build ## hot cache hits beside hits read from disk: cdn-proxy vs nginx (BASE_BIN=another cdn-proxy binary adds it)
	@scripts/ensure-packages.sh nginx:nginx-light curl:curl python3:python3
	@bench/cold-hits.sh

bench-policies: build sample ## every selection policy vs nginx/HAProxy least-conn under open-loop load with one origin degraded (table + plot in bench/results/policies)
	@scripts/ensure-packages.sh nginx:nginx-light haproxy:haproxy curl:curl python3:python3
	@bench/policies.sh

bench-streams: build sample ## proxy and origin memory per open slow stream (N=1000 streams reading 16 KiB/s) and after they close
	@scripts/ensure-packages.sh curl:curl python3:python3
	@bench/slow-streams.sh

clean: ## remove build output
	$(CARGO) clean
