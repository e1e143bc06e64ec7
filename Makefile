# tofu — the two commands a new machine needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
RUNTIME := $(VENV)/.runtime
STAMP  := $(VENV)/.installed
THUMBOR := bench/.venv-thumbor/bin/thumbor
SHARP  := bench/.sharp/node_modules/sharp/package.json

.PHONY: serve test test-image test-new-user image-deps lint docs system-deps bench-load bench-compare bench-soak clean

# What serving needs (the package and its dependencies), apart from what testing needs.
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

# Real programs the tests run next to tofu: nginx (load balancer, image_filter peer),
# Varnish (CDN stand-in), wrk (load), docker-compose (offline `config` check of the compose
# file; no engine is needed), chromium (the browser test, driven by Playwright), Node.js and
# npm (sharp). Installed from Debian when missing.
system-deps:
	@if ! command -v nginx >/dev/null || ! command -v varnishd >/dev/null \
	    || ! command -v wrk >/dev/null || ! command -v docker-compose >/dev/null \
	    || ! command -v chromium >/dev/null || ! command -v npm >/dev/null \
	    || [ ! -e /usr/lib/nginx/modules/ngx_http_image_filter_module.so ]; then \
	  echo "installing nginx, varnish, wrk, docker-compose, chromium, nodejs, npm from Debian"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends \
	    nginx-light libnginx-mod-http-image-filter varnish wrk docker-compose chromium nodejs \
	    npm >/dev/null; \
	fi

# thumbor 7 in its own virtualenv (its dependencies must not mix with tofu's): the thumbor
# compatibility tests run it side by side with tofu, the benchmarks compare against it.
$(THUMBOR): $(STAMP)
	$(BIN)/python -c "from bench.servers import ensure_thumbor; ensure_thumbor()"

# sharp (libvips for Node) with npm into bench/.sharp: the bench tests start its server, the
# benchmarks compare against it. Needs Node.js and npm (system-deps).
$(SHARP): $(STAMP) | system-deps
	$(BIN)/python -c "from bench.servers import ensure_sharp; ensure_sharp()"

# PORT=8090 serves elsewhere. docker-compose.yml binds 8080 (Varnish) and 8081 (nginx): with
# the compose stack up, `make serve` needs another port.
serve: $(RUNTIME)
	@echo "tofu on http://127.0.0.1:$(PORT) over ./samples (dev mode: unsigned URLs allowed). Try:"
	@echo "  http://127.0.0.1:$(PORT)/recipes/1203423/750x500cq60/5366e857.jpg"
	@echo "  http://127.0.0.1:$(PORT)/recipes/1203423/280x194c/5366e857.jpg"
	@echo "  http://127.0.0.1:$(PORT)/recipes/1/650s/cups.jpg"
	@echo "  http://127.0.0.1:$(PORT)/recipes/2/280x194a@2x.webp/autumn.jpg"
	@echo "  http://127.0.0.1:$(PORT)/logos/64x64c/rgba.png"
	@echo "  http://127.0.0.1:$(PORT)/metrics"
	$(BIN)/tofu serve --dev --origin samples --host 127.0.0.1 --port $(PORT) --workers 1

# docs/settings.md, generated from the one settings table (tofu/config.py); a test fails when it
# is stale.
docs: $(RUNTIME)
	$(BIN)/python -c 'import tofu.config as c; print(c.settings_markdown(), end="")' > docs/settings.md

lint: $(STAMP)
	$(BIN)/ruff check tofu tests bench
	$(BIN)/ruff format --check tofu tests bench
	$(BIN)/mypy

test: $(STAMP) system-deps lint $(THUMBOR) $(SHARP)
	$(BIN)/python -m pytest -q

# The container image proven (tests/test_image.py): deploy/Dockerfile built and run with
# Debian's podman and runc (no Docker daemon), on a stand-in base made by mmdebstrap. Separate
# from `make test`: the first run takes a minute or two. Needs no recommends: as root with the
# host's network, podman wants neither uidmap, slirp4netns nor fuse-overlayfs.
image-deps:
	@if [ "$$(dpkg-query -W -f='$${db:Status-Abbrev}\n' podman runc mmdebstrap 2>/dev/null \
	      | grep -c '^ii')" != 3 ]; then \
	  echo "installing podman, runc, mmdebstrap from Debian"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends podman runc mmdebstrap >/dev/null; \
	fi

test-image: $(STAMP) image-deps
	$(BIN)/python -m pytest -q -m image tests/test_image.py

# A new user's first minutes (tests/test_new_user.py): the committed HEAD cloned into a
# temporary directory, `make serve` there, its example URLs fetched, its venv checked for test
# and bench packages. Separate from `make test`: the fresh pip install takes about a minute.
test-new-user: $(STAMP)
	$(BIN)/python -m pytest -q -m new_user tests/test_new_user.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Benchmarks (bench/README.md). Every duration and concurrency is a flag; pass more in BENCH_ARGS.
bench-load: $(STAMP) system-deps
	@test -n "$(URL)" || { echo "usage: make bench-load URL=http://host:port [SECRET=..] [DURATION=30s] [BENCH_ARGS='--concurrency 64 ...']"; exit 2; }
	$(BIN)/python -m bench.load --url $(URL) $(if $(SECRET),--secret $(SECRET)) $(if $(DURATION),--duration $(DURATION)) $(BENCH_ARGS)

bench-compare: $(STAMP) system-deps $(SHARP)
	$(BIN)/python -m bench.compare --photos $(or $(PHOTOS),samples) --out bench/results/ $(if $(DURATION),--duration $(DURATION)) $(BENCH_ARGS)

bench-soak: $(STAMP) system-deps
	$(BIN)/python -m bench.soak --photos $(or $(PHOTOS),samples) --out bench/results/ --duration $(or $(DURATION),10m) $(BENCH_ARGS)
