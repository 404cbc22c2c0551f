#!/bin/sh
# Proves a cross-built binary under qemu-user: static, right architecture and endianness,
# --version, check-config, and the host's black-box contract tests (tokens, CORS, card,
# errors, CLI) run against `serve` under the emulator, curl-free: the tests' own TLS client
# talks to it over loopback.
#   cross/test.sh TARGET
set -eu
target=${1:?usage: cross/test.sh TARGET}
cd "$(dirname "$0")/.."
# Absolute: cargo runs the tests from the crate's directory (crates/box), not from here.
bin=$PWD/target/cross/$target/release/boxapi
case $target in
    armv7-*) qemu=qemu-arm-static; want="ARM, EABI5" ; endian=LSB ;;
    aarch64-*) qemu=qemu-aarch64-static; want="ARM aarch64"; endian=LSB ;;
    mipsel-*) qemu=qemu-mipsel-static; want="MIPS"; endian=LSB ;;
    mips-*) qemu=qemu-mips-static; want="MIPS"; endian=MSB ;;
    *) echo "cross/test.sh: unsupported target $target" >&2; exit 64 ;;
esac
desc=$(file -b "$bin")
echo "$target: $desc"
case $desc in *"statically linked"*) ;; *) echo "FAIL: not statically linked" >&2; exit 1 ;; esac
case $desc in *"$endian"*"$want"*) ;; *) echo "FAIL: expected $endian $want" >&2; exit 1 ;; esac
"$qemu" "$bin" --version
# Everything but what cannot run under qemu-user: faketime (LD_PRELOAD, and the binary is
# static), the demo test (it runs the host build), and root-only tests.
BOXAPI_TEST_BIN=$bin BOXAPI_TEST_RUNNER=$qemu cargo test --locked -p boxapi --test api --test card --test cli --test control --test stream -- \
    --skip clock_before_build_date --skip demo_prints --skip started_as_root --skip killed_while_writing
# Big-endian MIPS has no kernel to boot here (make test-box covers ARM): the netlink parsers'
# tests run under the emulator instead, on bytes in its order (cross/parsers.sh).
case $target in
    mips-*) ./cross/parsers.sh "$target" ;;
esac
