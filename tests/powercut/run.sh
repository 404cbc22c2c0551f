#!/bin/sh
# make test-powercut: power cuts during bursts of `boxapi ctl` changes, on a file system that
# drops every write not fsynced (Jepsen's LazyFS); see powercut.py. LazyFS is not part of this
# repository: point BOXAPI_LAZYFS at its binary (or at a directory holding build/lazyfs), or put
# `lazyfs` on PATH. Without it, or without root and /dev/fuse, this prints one SKIP line and
# exits 0. BOXAPI_POWERCUT_CUTS (default 200) and BOXAPI_POWERCUT_SEED tune the run.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
skip() { echo "SKIP: power-cut test: $*"; exit 0; }
lazyfs=
if [ -n "${BOXAPI_LAZYFS:-}" ]; then
    for c in "$BOXAPI_LAZYFS" "$BOXAPI_LAZYFS/lazyfs" "$BOXAPI_LAZYFS/build/lazyfs" \
        "$BOXAPI_LAZYFS/lazyfs/build/lazyfs"; do
        if [ -f "$c" ] && [ -x "$c" ]; then lazyfs=$c; break; fi
    done
    # Asked for by name: a wrong path is an error, not a reason to skip.
    [ -n "$lazyfs" ] || { echo "FAIL: BOXAPI_LAZYFS=$BOXAPI_LAZYFS holds no lazyfs executable" >&2; exit 1; }
else
    lazyfs=$(command -v lazyfs 2>/dev/null) || skip "LazyFS not found (set BOXAPI_LAZYFS to its binary, github.com/dsrhaslab/lazyfs)"
fi
[ "$(id -u)" = 0 ] || skip "needs root (FUSE mount with allow_other)"
[ -c /dev/fuse ] || skip "no /dev/fuse (modprobe fuse)"
command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 missing (Debian package fuse3)"
command -v python3 >/dev/null 2>&1 || skip "python3 missing"
box=${BOXAPI_BIN:-$root/target/debug/boxapi}
[ -x "$box" ] || { echo "FAIL: $box missing: cargo build -p boxapi" >&2; exit 1; }
set -- --lazyfs "$lazyfs" --boxapi "$box" --repo "$root" --cuts "${BOXAPI_POWERCUT_CUTS:-200}"
[ -z "${BOXAPI_POWERCUT_SEED:-}" ] || set -- "$@" --seed "$BOXAPI_POWERCUT_SEED"
exec python3 "$root/tests/powercut/powercut.py" "$@"
