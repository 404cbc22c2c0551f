#!/bin/bash
# make test-openwrt: the box UI through OpenWrt's own parts. Builds libubox, uci, ubus, rpcd and
# uhttpd from OPENWRT_SRC (a directory holding their source trees; the project never contains
# other projects' code and CI cannot download it), then runs tests/openwrt/check.py against them
# and a running boxapi (the debug build): rpcd with the package's plugin and ACL, uhttpd's /ubus,
# the LuCI view in Chromium (when OPENWRT_SRC has luci/ and tests/e2e's Playwright is installed),
# and the package's shell files against shellcheck and procd's own procd.sh.
#   OPENWRT_SRC=/path/to/src tests/openwrt/run.sh
# OPENWRT_SRC holds libubox/ uci/ ubus/ rpcd/ uhttpd/ and optionally luci/ (openwrt/luci) and
# procd.sh (openwrt/openwrt's package/system/procd/files/procd.sh); see docs/testing.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -z "${OPENWRT_SRC:-}" ]; then
    echo "skipped: no OpenWrt sources (OPENWRT_SRC)"
    exit 0
fi
src=$(cd "$OPENWRT_SRC" && pwd)
for p in libubox uci ubus rpcd uhttpd; do
    [ -f "$src/$p/CMakeLists.txt" ] || { echo "test-openwrt: no $src/$p/CMakeLists.txt" >&2; exit 1; }
done
bin=${BOXAPI_BIN:-$root/target/debug/boxapi}
[ -x "$bin" ] || { echo "test-openwrt: no $bin (cargo build -p boxapi first)" >&2; exit 1; }
for t in cmake pkg-config cc python3 openssl; do
    command -v "$t" >/dev/null || { echo "test-openwrt: $t is missing (make deps)" >&2; exit 1; }
done
[ -f /usr/include/json-c/json.h ] || { echo "test-openwrt: libjson-c-dev is missing (make deps)" >&2; exit 1; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# The build, cached by the sources' content (outside the repository): a prefix with ubusd, rpcd,
# uhttpd and their libraries. Two changes to the copies built, none to OPENWRT_SRC: uci's
# compiled-in /etc/config becomes <prefix>/etc/config (rpcd reads its logins through it, and the
# test must not write the host's /etc), and uhttpd loses -Werror (newer gcc warnings break it).
t0=$(now)
key=$(cd "$src" && find libubox uci ubus rpcd uhttpd -type f ! -path '*/.git/*' -print0 | LC_ALL=C sort -z |
      xargs -0 sha256sum | sha256sum | cut -c1-16)
cache=${OPENWRT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxapi-openwrt}
prefix=$cache/$key
if [ -x "$prefix/sbin/rpcd" ] && [ -x "$prefix/bin/uhttpd" ] && [ -x "$prefix/sbin/ubusd" ]; then
    echo "== build: cached in $prefix"
else
    rm -rf "$prefix" "$prefix.build"
    mkdir -p "$prefix.build"
    log=$prefix.build/build.log
    build() {  # NAME CMAKE-FLAGS...
        local name=$1; shift
        local t; t=$(now)
        cp -a "$src/$name" "$prefix.build/$name"
        case $name in
            uci) sed -i "s|#define UCI_CONFDIR \"/etc/config\"|#define UCI_CONFDIR \"$prefix/etc/config\"|" "$prefix.build/uci/uci.h"
                 grep -q "UCI_CONFDIR \"$prefix/etc/config\"" "$prefix.build/uci/uci.h" ||
                     { echo "test-openwrt: uci.h has no UCI_CONFDIR to move" >&2; exit 1; } ;;
            uhttpd) sed -i 's/ -Werror//' "$prefix.build/uhttpd/CMakeLists.txt" ;;
        esac
        if ! { cmake -S "$prefix.build/$name" -B "$prefix.build/$name/build" \
                 -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_PREFIX_PATH="$prefix" \
                 -DCMAKE_C_FLAGS="-I$prefix/include" -DCMAKE_EXE_LINKER_FLAGS="-L$prefix/lib -Wl,-rpath,$prefix/lib" \
                 -DCMAKE_SHARED_LINKER_FLAGS="-L$prefix/lib -Wl,-rpath,$prefix/lib" \
                 -DCMAKE_MODULE_LINKER_FLAGS="-L$prefix/lib -Wl,-rpath,$prefix/lib" "$@" &&
               make -C "$prefix.build/$name/build" -j"$(nproc)" install; } >>"$log" 2>&1; then
            echo "test-openwrt: building $name failed; the end of $log:" >&2
            tail -n 30 "$log" >&2
            exit 1
        fi
        echo "== build: $name in $(since "$t") s"
    }
    build libubox -DBUILD_LUA=OFF -DBUILD_EXAMPLES=OFF
    build uci -DBUILD_LUA=OFF
    build ubus -DBUILD_LUA=OFF -DBUILD_EXAMPLES=OFF
    build rpcd -DIWINFO_SUPPORT=OFF -DUCODE_SUPPORT=OFF -DRPCSYS_SUPPORT=OFF -DFILE_SUPPORT=OFF
    build uhttpd -DTLS_SUPPORT=OFF -DLUA_SUPPORT=OFF -DUCODE_SUPPORT=OFF
    rm -rf "$prefix.build"
    echo "== build: all in $(since "$t0") s ($prefix)"
fi

exec python3 "$here/check.py" --prefix "$prefix" --src "$src" --boxapi "$bin" --root "$root"
