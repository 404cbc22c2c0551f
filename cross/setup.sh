#!/bin/sh
# Installs what `make cross` needs, idempotently, from package registries only:
# Debian's rustc-web/cargo-web + rust-web-src (std sources of the same version), qemu-user-static,
# zig from PyPI (in a venv) and cargo-zigbuild from crates.io.
set -eu
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
missing=
for p in rustc-web cargo-web rust-web-src qemu-user-static file python3-venv; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
zig_venv=${BOXAPI_ZIG_VENV:-$HOME/.cache/boxapi-zig}
if ! "$zig_venv/bin/python3" -c 'import ziglang' 2>/dev/null; then
    python3 -m venv "$zig_venv"
    "$zig_venv/bin/pip" install -q ziglang
fi
command -v cargo-zigbuild >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo-zigbuild" ] ||
    cargo install --locked cargo-zigbuild
