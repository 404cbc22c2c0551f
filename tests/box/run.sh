#!/bin/bash
# make test-box: the SoC binaries that `make cross` ships, on real ARM kernels. For each ARCH,
# a qemu-system VM (TCG) boots Debian's kernel for it (armhf: armmp on -M virt cortex-a15;
# arm64: on cortex-a57) with an initramfs built here from Debian packages (image.sh), an ext4
# disk made here, and the exact boxapi bytes of target/cross/<target>/release/boxapi, started
# as root with its root drop. check.py drives the VM (a reboot forced from the qemu monitor
# included) and checks what it printed: LAN only, neighbour table and bridge port, WAN
# counters, Wi-Fi, port 443 after the drop, state across the reboot. Needs root.
#   tests/box/run.sh [armhf] [arm64]        (default: both)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
OUT=${OUT:-$root/target/box-vm}
host_bin=${BOXAPI_HOST_BIN:-$root/target/debug/boxapi}
arches=("$@"); [ ${#arches[@]} -gt 0 ] || arches=(armhf arm64)
[ "$(id -u)" = 0 ] || { echo "test-box: needs root (packages, foreign architectures)" >&2; exit 1; }
[ -x "$host_bin" ] || { echo "test-box: no $host_bin (cargo build -p boxapi first)" >&2; exit 1; }
mkdir -p "$OUT"

# Packages, idempotently: the emulator, the disk's file system, and apt sources for the boxes'
# architectures (their packages are downloaded and unpacked by image.sh, never installed).
added=
for a in armhf arm64; do
    dpkg --print-foreign-architectures | grep -qx "$a" || { dpkg --add-architecture "$a"; added=1; }
done
missing=
for p in qemu-system-arm e2fsprogs cpio kmod binutils openssl python3; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
export DEBIAN_FRONTEND=noninteractive
if [ -n "$added" ] || [ -n "$missing" ]; then
    timeout 600 apt-get -o DPkg::Lock::Timeout=300 update -qq >"$OUT/apt.log" 2>&1 ||
        { echo "test-box: apt-get update failed, see $OUT/apt.log" >&2; exit 1; }
fi
if [ -n "$missing" ]; then
    echo "test-box: installing$missing"
    timeout 900 apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >>"$OUT/apt.log" 2>&1 ||
        { echo "test-box: apt-get install failed, see $OUT/apt.log" >&2; exit 1; }
fi

# What every VM gets: certificates for the box's LAN names, two tools' keys and tokens.
work=$(mktemp -d "$OUT/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
box=$work/box
"$root/certs/make-dev-certs.sh" "$box/certs" DNS:box.test IP:192.168.60.1 IP:192.168.50.1 IP:fd60::1 >/dev/null
rm -f "$box/certs/ca.key"
for t in vmtool othertool; do
    "$host_bin" keygen --alg ES256 --kid "$t" --out "$box/keys" >/dev/null
    "$host_bin" token --key "$box/keys/$t.private.jwk" --tool "$t" --scope "access counters" \
        --aud https://box.test --iss https://issuer.test > "$box/token.$t"
    rm -f "$box/keys/$t.private.jwk"
done
cp "$here/in-vm.sh" "$box/in-vm.sh"

total=0 fails=0
for arch in "${arches[@]}"; do
    case $arch in
        armhf) target=armv7-unknown-linux-musleabihf ;;
        arm64) target=aarch64-unknown-linux-musl ;;
        *) echo "test-box: ARCH is armhf or arm64, not $arch" >&2; exit 64 ;;
    esac
    bin=$root/target/cross/$target/release/boxapi
    [ -f "$bin" ] || { echo "test-box: no $bin (make cross first)" >&2; exit 1; }
    t0=$(date +%s.%N)
    read -r kernel base < <("$here/image.sh" "$arch" "$OUT/$arch") || { echo "test-box: $arch image failed" >&2; exit 1; }
    [ -n "${base:-}" ] || { echo "test-box: $arch image failed" >&2; exit 1; }
    # The shipped bytes, unchanged (not stripped, not rebuilt).
    cp "$bin" "$box/boxapi"
    (cd "$work" && find box | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet) > "$work/overlay.cpio"
    cat "$base" "$work/overlay.cpio" > "$work/initrd-$arch.cpio"
    rm -f "$work/disk-$arch.img"
    truncate -s 64M "$work/disk-$arch.img"
    mkfs.ext4 -q -F "$work/disk-$arch.img"
    t1=$(date +%s.%N)
    echo "== $arch ($target): image ready in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
    set +e
    python3 "$here/check.py" --arch "$arch" --kernel "$kernel" --initrd "$work/initrd-$arch.cpio" \
        --disk "$work/disk-$arch.img" --sha256 "$(sha256sum "$bin" | cut -d' ' -f1)" \
        --out "$OUT/$arch" --timeout "${VM_TIMEOUT:-300}"
    rc=$?
    set -e
    t2=$(date +%s.%N)
    took=$(awk -v a="$t0" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')
    total=$(awk -v a="$total" -v b="$took" 'BEGIN{printf "%.1f", a+b}')
    echo "== $arch: $([ $rc = 0 ] && echo passed || echo FAILED) in $took s (console: $OUT/$arch/console.log)"
    [ $rc = 0 ] || fails=$((fails+1))
done
echo "test-box: ${#arches[@]} VM(s), $fails failed, $total s"
[ $fails = 0 ]
