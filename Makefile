# tofu — the two commands a new machine needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
STAMP  := $(VENV)/.installed

.PHONY: serve test lint system-deps bench-load bench-compare bench-soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

# Real servers the tests run next to tofu: nginx (load balancer, image_filter peer),
# Varnish (CDN stand-in), wrk (load). Installed from Debian when missing.
system-deps:
	@if ! command -v nginx >/dev/null || ! command -v varnishd >/dev/null \
	    || ! command -v wrk >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_http_image_filter_module.so ]; then \
	  echo "installing nginx, varnish, wrk from Debian"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    nginx-light libnginx-mod-http-image-filter varnish wrk >/dev/null; \
	fi

serve: $(STAMP)
	@echo "tofu on http://127.0.0.1:$(PORT) over ./samples (dev mode: unsigned URLs allowed). Try:"
	@echo "  http://127.0.0.1:$(PORT)/recipes/1203423/750x500cq60/5366e857.jpg"
	@echo "  http://127.0.0.1:$(PORT)/recipes/1203423/280x194c/5366e857.jpg"
	@echo "  http://127.0.0.1:$(PORT)/recipes/1/650s/cups.jpg"
	@echo "  http://127.0.0.1:$(PORT)/recipes/2/280x194a@2x.webp/autumn.jpg"
	@echo "  http://127.0.0.1:$(PORT)/logos/64x64c/rgba.png"
	@echo "  http://127.0.0.1:$(PORT)/metrics"
	$(BIN)/tofu serve --dev --origin samples --host 127.0.0.1 --port $(PORT) --workers 1

lint: $(STAMP)
	$(BIN)/ruff check tofu tests bench
	$(BIN)/ruff format --check tofu tests bench

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
