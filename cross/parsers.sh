#!/bin/sh
# The netlink parsers' own tests, cross-built for TARGET and run under qemu-user: nla (messages
# and attributes) and the rtnetlink neighbour reader (their unit tests build messages in the
# target's byte order), and tests/nl80211.rs (kernel captures and pyroute2 messages, turned into
# the target's byte order by the test). For big-endian MIPS, whose kernels Debian does not ship:
# the only place these parsers meet big-endian bytes. Called by cross/test.sh.
#   cross/parsers.sh TARGET
set -eu
target=${1:?usage: cross/parsers.sh TARGET}
case $target in
    mips-*) qemu=qemu-mips-static ;;
    mipsel-*) qemu=qemu-mipsel-static ;;
    *) echo "cross/parsers.sh: MIPS targets only (ARM runs on its kernels: make test-box)" >&2; exit 64 ;;
esac
cd "$(dirname "$0")/.."
zig_venv=${BOXAPI_ZIG_VENV:-$HOME/.cache/boxapi-zig}
# cross/build.sh's link flags, with unwinding kept: the test harness catches panics. Everything
# unwinds, the binary the tests' crate builds too: with build-std, a second std built for
# panic=abort sits beside the first and dependencies then find two `core`s (E0152).
flags="-C link-self-contained=no -C target-feature=+crt-static -C relocation-model=static"
list=$(mktemp)
trap 'rm -f "$list"' EXIT
PATH="$zig_venv/bin:/usr/bin:$HOME/.cargo/bin:$PATH" \
RUSTFLAGS="$flags" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
    cargo-zigbuild test --no-run -Zbuild-std=std,panic_unwind --release --config 'profile.release.panic="unwind"' --locked -p boxapi \
    --no-default-features --lib --test nl80211 --target "$target" \
    --target-dir target/cross-test --message-format json-render-diagnostics > "$list"
bins=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["name"], m["executable"])
' "$list")
lib=$(echo "$bins" | awk '$1 == "boxapi" {print $2}')
nl=$(echo "$bins" | awk '$1 == "nl80211" {print $2}')
[ -n "$lib" ] && [ -n "$nl" ] || { echo "cross/parsers.sh: no test binaries built" >&2; exit 1; }
file -b "$lib"
# Not the test that opens a kernel netlink socket: qemu-user hands it to this PC's kernel
# (little-endian), which is not what is being tested.
out=$("$qemu" "$lib" card::nla card::neigh --skip a_kernel_socket) || { echo "$out"; exit 1; }
echo "$out"
# A filter that stops matching (a module renamed) runs nothing and still passes: count what ran.
ran=$(echo "$out" | sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p')
[ "${ran:-0}" -ge 4 ] || { echo "cross/parsers.sh: ${ran:-0} parser tests ran, at least 4 expected" >&2; exit 1; }
(cd crates/box && "$qemu" "$nl")
