# boxapi: the two entry points are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What the tests drive besides Rust: openssl (fixtures), curl (demo and namespace clients),
# iproute2 + ping (network namespaces), faketime (a box whose clock is not set yet),
# systemd (systemd-analyze, to keep the unit's exposure score in check).
TEST_PACKAGES := openssl curl iproute2 iputils-ping faketime ca-certificates systemd

.PHONY: demo test deps lint unit-security build release size clean

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

# The unit's exposure must stay "OK" (below 2.0; see docs/operations.md).
unit-security:
	@score=$$(systemd-analyze security --offline=true systemd/boxapi.service 2>/dev/null | sed -n 's/.*Overall exposure level for boxapi.service: \([0-9.]*\).*/\1/p'); \
	echo "systemd/boxapi.service exposure: $$score"; \
	awk -v s="$$score" 'BEGIN { exit !(s != "" && s < 2.0) }'

test: deps lint unit-security
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
