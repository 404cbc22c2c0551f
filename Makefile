# boxapi: the two entry points are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What the tests drive besides Rust: openssl (fixtures), curl (demo and namespace clients),
# iproute2 + ping (network namespaces), faketime (a box whose clock is not set yet).
TEST_PACKAGES := openssl curl iproute2 iputils-ping faketime ca-certificates

.PHONY: demo test deps lint build release size clean

demo:
	$(CARGO) run --release --locked --quiet -- demo

# Idempotent: installs only what is missing.
deps:
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	@if $(CARGO) clippy --version >/dev/null 2>&1; then \
	  $(CARGO) clippy --locked --all-targets -- -D warnings; \
	else echo "clippy not installed: lint skipped"; fi

test: deps lint
	$(CARGO) test --locked

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --release --locked

size: release
	@printf '%-28s %10s\n' target bytes
	@printf '%-28s %10s\n' "$$(rustc -vV | sed -n 's/^host: //p')" "$$(stat -c %s target/release/boxapi)"

clean:
	$(CARGO) clean
