#!/bin/sh
# Builds a static, stripped boxapi for one box SoC target:
#   cross/build.sh TARGET        (output: target/cross/TARGET/release/boxapi)
# Debian's rustc-web with its std sources (rust-web-src) builds std for the target
# (-Zbuild-std; RUSTC_BOOTSTRAP because build-std is unstable), zig links against musl.
# The host build keeps the normal rustup toolchain. See cross/README.md.
set -eu
target=${1:?usage: cross/build.sh TARGET}
case $target in
    armv7-unknown-linux-musleabihf | aarch64-unknown-linux-musl | x86_64-unknown-linux-musl)
        # build-std leaves no self-contained crt objects: link against zig's musl.
        flags="-C link-self-contained=no" ;;
    mipsel-unknown-linux-musl | mips-unknown-linux-musl)
        # These targets default to dynamic linking; zig would make a static-pie that crashes at start.
        # The binary is static and never relocated, so its code need not be position-independent:
        # MIPS o32 PIC reaches every call and global through the GOT ($gp, $t9), ~12 % of the
        # file (mipsel: 2,157,652 -> 1,904,356 bytes; docs/dependencies.md), and costs loads too.
        flags="-C link-self-contained=no -C target-feature=+crt-static -C relocation-model=static" ;;
    *) echo "cross/build.sh: unsupported target $target" >&2; exit 64 ;;
esac
# A panic on a box aborts at once, without formatting a message: the machinery to print one
# costs ~100 KB, and no panic is reachable from the network, a file or the control socket.
# With nothing ever unwound or reported, unwind tables and the file/line strings kept for panic
# messages are dead weight too.
flags="$flags -Zunstable-options -Cpanic=immediate-abort -Cforce-unwind-tables=no -Zlocation-detail=none"
zig_venv=${BOXAPI_ZIG_VENV:-$HOME/.cache/boxapi-zig}
cd "$(dirname "$0")/.."
# Flags go through RUSTFLAGS (cargo-zigbuild ignores target rustflags given with --config); with
# an explicit --target they do not reach build scripts or proc-macros.
PATH="$zig_venv/bin:/usr/bin:$HOME/.cargo/bin:$PATH" \
RUSTFLAGS="$flags" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
    /usr/bin/cargo zigbuild -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size \
    --release --locked -p boxapi --no-default-features --target "$target" --target-dir target/cross
# MIPS objects carry `.pdr` (procedure descriptors for old debuggers): not loaded at run time,
# kept by the linker, ~9% of the file. llvm-objcopy drops it; the rustup toolchain ships one as
# rust-objcopy (it needs the toolchain's libLLVM).
case $target in
    mips*)
        bin=target/cross/$target/release/boxapi
        sysroot=$("$HOME/.cargo/bin/rustc" --print sysroot 2>/dev/null || true)
        objcopy=$(ls "$sysroot"/lib/rustlib/*/bin/rust-objcopy 2>/dev/null | head -1)
        [ -n "$objcopy" ] || objcopy=$(command -v llvm-objcopy || true)
        if [ -n "$objcopy" ]; then
            LD_LIBRARY_PATH="$sysroot/lib" "$objcopy" --remove-section=.pdr "$bin" "$bin.tmp"
            mv "$bin.tmp" "$bin"
        else
            echo "cross/build.sh: no llvm-objcopy; $bin keeps its .pdr section" >&2
        fi ;;
esac
