#!/bin/bash
# Builds a box VM's kernel and base initramfs for ARCH (armhf or arm64) from Debian packages:
# the kernel (linux-image-*-armmp / -arm64), busybox-static, and hostapd, wpa_supplicant, iw,
# iproute2 and openssl with exactly the shared libraries they need (their NEEDED closure,
# checked here: a package list that stops covering it fails the build). Cached by the
# packages' versions and the init; prints "KERNEL INITRD" on success.
#   tests/box/image.sh ARCH OUTDIR
set -euo pipefail
arch=${1:?usage: image.sh armhf|arm64 OUTDIR}
out=${2:?usage: image.sh armhf|arm64 OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
case $arch in
    armhf) flavour=armmp; triplet=arm-linux-gnueabihf ;;
    arm64) flavour=arm64; triplet=aarch64-linux-gnu ;;
    *) echo "image.sh: ARCH is armhf or arm64" >&2; exit 64 ;;
esac
# Libraries of the five tools below (ldd cannot run foreign binaries: the closure is checked
# with readelf instead).
LIBS="libc6 libgcc-s1 libssl3 libnl-3-200 libnl-genl-3-200 libnl-route-3-200 libdbus-1-3
      libsystemd0 libcap2 libgcrypt20 libgpg-error0 liblz4-1 liblzma5 libzstd1 libpcsclite1
      libreadline8 libtinfo6 libbpf1 libelf1 zlib1g libbsd0 libmd0 libdb5.3 libmnl0 libselinux1
      libpcre2-8-0 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2
      libkeyutils1 libxtables12"
TOOLS="busybox-static hostapd wpasupplicant iw iproute2 openssl"
BINS="bin/ip sbin/iw sbin/wpa_supplicant usr/sbin/hostapd usr/bin/openssl"
# Modules in the order they are loaded; their dependencies are resolved with depmod.
MODS="virtio_mmio virtio_blk crc32c_generic ext4 veth bridge rfkill libarc4 cfg80211 mac80211 mac80211_hwsim"

mkdir -p "$out"; out=$(cd "$out" && pwd)
debs=$out/debs; mkdir -p "$debs"
# The kernel's real package is the one the meta package depends on.
meta=$(apt-cache depends "linux-image-$flavour:$arch" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -1)
[ -n "$meta" ] || { echo "image.sh: no linux-image-$flavour:$arch (dpkg --add-architecture $arch; apt-get update)" >&2; exit 91; }
kver=${meta#linux-image-}
want="$meta:$arch wireless-regdb"
for p in $LIBS $TOOLS; do want="$want $p:$arch"; done
# Versions decide the cache key; download only what is not in the cache yet.
names=$(apt-get download --print-uris $want 2>/dev/null | awk '{print $2}') || true
[ -n "$names" ] || { echo "image.sh: apt-get cannot find the packages ($want)" >&2; exit 91; }
missing=
for n in $names; do [ -s "$debs/$n" ] || missing=1; done
if [ -n "$missing" ]; then
    (cd "$debs" && apt-get download $want >"$out/apt.log" 2>&1) ||
        { echo "image.sh: apt-get download failed, see $out/apt.log" >&2; exit 91; }
    # Drop stale versions.
    for f in "$debs"/*.deb; do
        case " $(echo $names) " in *" $(basename "$f") "*) ;; *) rm -f "$f" ;; esac
    done
fi
key=$( { echo "$names"; cat "$here/init.sh"; echo "$MODS $BINS"; cat "$0"; } | sha256sum | cut -c1-16)
base=$out/base-$key.cpio
kernel=$out/vmlinuz-$kver
if [ -s "$base" ] && [ -s "$kernel" ]; then
    echo "$kernel $base"; exit 0
fi
st=$(mktemp -d "$out/stage.XXXXXX")
trap 'rm -rf "$st"' EXIT
root=$st/root img=$st/img
mkdir -p "$root" "$img"
for f in "$debs"/*.deb; do dpkg-deb -x "$f" "$root"; done
cp "$root/boot/vmlinuz-$kver" "$kernel.tmp"; mv "$kernel.tmp" "$kernel"
# Modules: depmod on the unpacked tree gives each module's dependencies, loaded first.
depmod -b "$root" "$kver"
moddir=lib/modules/$kver
order=()
declare -A seen=()
add() {
    local m=$1 path d
    path=$(grep -E "(^|/)$m\.ko:" "$root/$moddir/modules.dep" | cut -d: -f1) ||
        { grep -qE "/$m\.ko$" "$root/$moddir/modules.builtin" && return 0
          echo "image.sh: no module $m in $kver" >&2; exit 91; }
    [ -n "${seen[$path]:-}" ] && return 0
    seen[$path]=1
    for d in $(grep -E "^$path:" "$root/$moddir/modules.dep" | cut -d: -f2); do
        add "$(basename "$d" .ko)"
    done
    order+=("$path")
}
for m in $MODS; do add "$m"; done
mkdir -p "$img/$moddir"
for p in "${order[@]}"; do cp "$root/$moddir/$p" "$img/$moddir/"; done
for m in "${order[@]}"; do basename "$m"; done > "$img/etc.modules"
# Tools and their NEEDED closure (first match in /lib, then /usr/lib, as the loader looks).
needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
declare -A have=()
queue=$BINS
lost=
copy() { mkdir -p "$img/$(dirname "$1")"; cp -L "$root/$1" "$img/$1"; }
for b in $BINS; do copy "$b"; done
while [ -n "$queue" ]; do
    set -- $queue; f=$1; shift; queue="$*"
    for l in $(needed "$root/$f"); do
        [ -n "${have[$l]:-}" ] && continue
        have[$l]=1
        p=
        for d in lib/$triplet usr/lib/$triplet; do [ -e "$root/$d/$l" ] && { p=$d/$l; break; }; done
        if [ -z "$p" ]; then lost="$lost $l"; else copy "$p"; queue="$queue $p"; fi
    done
done
[ -z "$lost" ] || { echo "image.sh: libraries no package in the list provides:$lost" >&2; exit 91; }
# The dynamic loader under the name the binaries ask for (PT_INTERP).
interp=$(readelf -l "$root/usr/sbin/hostapd" | sed -n 's/.*interpreter: \(.*\)\]/\1/p')
copy "${interp#/}"
copy bin/busybox
copy etc/ssl/openssl.cnf
mkdir -p "$img/lib/firmware"
# The package leaves the choice of database to update-alternatives: Debian's, as installed.
cp "$root/lib/firmware/regulatory.db-debian" "$img/lib/firmware/regulatory.db"
cp "$root/lib/firmware/regulatory.db.p7s-debian" "$img/lib/firmware/regulatory.db.p7s"
mkdir -p "$img"/{proc,sys,dev,run,tmp,data,usr/bin,usr/sbin,sbin,etc}
mv "$img/etc.modules" "$img/etc/modules"
cp "$here/init.sh" "$img/init"; chmod +x "$img/init"
printf 'root:x:0:0:root:/root:/bin/sh\nboxapi:x:100:101:boxapi:/nonexistent:/bin/false\n' > "$img/etc/passwd"
printf 'root:x:0:\nboxapi:x:101:\n' > "$img/etc/group"
(cd "$img" && find . | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet) > "$base.tmp"
mv "$base.tmp" "$base"
find "$out" -maxdepth 1 \( -name 'base-*.cpio' ! -name "base-$key.cpio" -o -name 'vmlinuz-*' ! -name "vmlinuz-$kver" \) -delete
echo "$kernel $base"
