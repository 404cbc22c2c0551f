#!/bin/bash
# vm.sh — boot Debian's kernel under qemu (TCG) with mac80211_hwsim, an open
# AP (hostapd, wlan0, 192.168.50.1/24) and a station (wpa_supplicant, wlan1 in
# network namespace "sta", 192.168.50.2/24), then run a script inside the VM.
# Used by tests/wifi/run.sh (make test-wifi) and fixtures/make_fixtures.sh.
#
#   vm.sh --out DIR [--add SRC:DEST]... --run SCRIPT [--band 2|5] [--std n|ac|ax]
#         [--timeout SECS] [--keep-console] [--no-install] [--quiet]
#
# Prints the script's output (stdout+stderr) and exits with its exit code.
# Exit codes of the harness itself: 90 usage, 91 setup/install failure,
# 92 VM did not produce a result (timeout, crash, Wi-Fi never came up).
# The full serial console is kept in DIR/console.log.
set -euo pipefail

OUT= RUN= BAND=2 STD= TIMEOUT=240 QUIET=0 INSTALL=1 MEM=512
ADDS=()
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 90; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2;;
    --add) ADDS+=("$2"); shift 2;;
    --run) RUN=$2; shift 2;;
    --band) BAND=$2; shift 2;;
    --std) STD=$2; shift 2;;
    --timeout) TIMEOUT=$2; shift 2;;
    --mem) MEM=$2; shift 2;;
    --quiet) QUIET=1; shift;;
    --no-install) INSTALL=0; shift;;
    -h|--help) usage;;
    *) echo "vm.sh: unknown argument $1" >&2; usage;;
  esac
done
[ -n "$OUT" ] && [ -n "$RUN" ] || usage
[ -f "$RUN" ] || { echo "vm.sh: no such script $RUN" >&2; exit 90; }
case "$BAND" in 2|2.4) BAND=2;; 5) ;; *) echo "vm.sh: --band 2 or 5" >&2; exit 90;; esac
[ -z "$STD" ] && { [ "$BAND" = 5 ] && STD=ac || STD=n; }
case "$STD" in n|ac|ax) ;; *) echo "vm.sh: --std n, ac or ax" >&2; exit 90;; esac
[ "$STD" = ac ] && [ "$BAND" = 2 ] && { echo "vm.sh: VHT (ac) needs --band 5" >&2; exit 90; }
log() { [ "$QUIET" = 1 ] || echo "vm.sh: $*" >&2; }
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
T0=$(date +%s.%N)

# ---------------------------------------------------------------- packages
PKGS="qemu-system-x86 linux-image-amd64 busybox-static hostapd wpasupplicant iw
      wireless-regdb iproute2 curl strace cpio kmod"
if [ "$INSTALL" = 1 ]; then
  missing=
  for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    log "installing$missing"
    # other sessions may hold the dpkg lock: wait for it (bounded)
    export DEBIAN_FRONTEND=noninteractive
    timeout 900 apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >"$OUT/apt.log" 2>&1 \
      || { timeout 300 apt-get -o DPkg::Lock::Timeout=300 update -qq >>"$OUT/apt.log" 2>&1 &&
           timeout 900 apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >>"$OUT/apt.log" 2>&1; } \
      || { echo "vm.sh: apt-get failed, see $OUT/apt.log" >&2; exit 91; }
  fi
fi

# ---------------------------------------------------------------- kernel
VMLINUZ=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)
[ -n "$VMLINUZ" ] || { echo "vm.sh: no /boot/vmlinuz-*" >&2; exit 91; }
KVER=${VMLINUZ#/boot/vmlinuz-}
[ -d "/lib/modules/$KVER" ] || { echo "vm.sh: no /lib/modules/$KVER" >&2; exit 91; }

# modules in load order (dependencies first), resolved with modinfo
declare -A SEEN=()
MODS=()
addmod() {
  local m=$1 d
  [ -n "${SEEN[$m]:-}" ] && return 0
  SEEN[$m]=1
  for d in $(modinfo -k "$KVER" -F depends "$m" | tr ',' ' '); do addmod "$d"; done
  MODS+=("$(modinfo -k "$KVER" -F filename "$m")")
}
for m in rfkill libarc4 cfg80211 mac80211 mac80211_hwsim; do addmod "$m"; done

# ---------------------------------------------------------------- base initramfs
BINS="/bin/bash /usr/sbin/hostapd /usr/sbin/wpa_supplicant /usr/sbin/wpa_cli /usr/sbin/iw /usr/bin/curl /usr/bin/strace /usr/sbin/ip"
BINS=$(for b in $BINS; do readlink -f "$b"; done)
LIBS=$(for b in $BINS; do ldd "$b" | awk '/=> \//{print $3} /^\t\//{print $1}'; done | sort -u)
REGDB=/lib/firmware/regulatory.db
INIT=$(cat <<'EOF'
#!/bin/busybox sh
IP=/usr/bin/ip
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /var /usr/bin /usr/sbin /sbin
/bin/busybox --install -s /bin
# busybox-static prefers its own applets inside busybox sh (so "ip" would be
# busybox's, without netns): scripts run under bash, init calls /usr/bin/ip
/bin/busybox ln -sf /usr/bin/bash /bin/sh; /bin/busybox ln -sf /usr/bin/bash /bin/bash; /bin/busybox rm -f /bin/ip
export PATH=/usr/sbin:/usr/bin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs run /run; mount -t tmpfs tmp /tmp; ln -s /run /var/run
echo 1 > /proc/sys/kernel/printk
. /etc/vm.conf
T0=$(cut -d' ' -f1 /proc/uptime)
say() { echo "vm-init: [$(cut -d' ' -f1 /proc/uptime)] $*"; }
die() { say "FATAL: $*"; echo "===VM-SETUP-FAILED==="; poweroff -f; sleep 10; }
$IP link set lo up
for m in $MODS; do
  case $m in *mac80211_hwsim*) insmod $m radios=2 || die "insmod $m";; *) insmod $m || die "insmod $m";; esac
done
say "modules loaded"
[ -n "$COUNTRY" ] && iw reg set $COUNTRY
i=0; while [ ! -e /sys/class/net/wlan1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -e /sys/class/net/wlan1 ] || die "no wlan1"
# the station's radio goes into its own namespace so AP<->station traffic crosses the air
$IP netns add sta || die "$IP netns add"
STAPHY=$(cat /sys/class/net/wlan1/phy80211/name)
iw phy $STAPHY set netns name sta || die "iw phy set netns"
$IP netns exec sta $IP link set lo up
mkdir -p /run/hostapd /run/wpa_supplicant
hostapd -t -B -P /run/hostapd.pid -f /tmp/hostapd.log /etc/hostapd.conf || { cat /tmp/hostapd.log; die "hostapd"; }
i=0; while ! grep -q AP-ENABLED /tmp/hostapd.log && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
grep -q AP-ENABLED /tmp/hostapd.log || { cat /tmp/hostapd.log; die "AP not enabled"; }
say "AP enabled"
$IP addr add 192.168.50.1/24 dev wlan0
$IP netns exec sta wpa_supplicant -t -B -i wlan1 -c /etc/wpa_supplicant.conf -P /run/wpa.pid -f /tmp/wpa.log || die "wpa_supplicant"
$IP netns exec sta $IP addr add 192.168.50.2/24 dev wlan1
$IP netns exec sta $IP link set wlan1 up
i=0; while ! $IP netns exec sta iw dev wlan1 link 2>/dev/null | grep -q Connected && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
$IP netns exec sta iw dev wlan1 link | grep -q Connected || { cat /tmp/hostapd.log /tmp/wpa.log; die "station did not associate"; }
say "associated"
# wait until traffic really flows (also fills the rate-control statistics)
i=0; while ! $IP netns exec sta ping -c1 -W1 192.168.50.1 >/dev/null 2>&1 && [ $i -lt 20 ]; do i=$((i+1)); done
say "wifi up (band=$BAND std=$STD)"
chmod +x /run.sh
echo "===VM-SCRIPT-BEGIN==="
( cd /tmp && /bin/bash /run.sh ) > /tmp/script.out 2>&1 </dev/null; rc=$?
cat /tmp/script.out
echo "===VM-SCRIPT-END rc=$rc==="
# a clean copy on the second serial port
stty -F /dev/ttyS1 raw -echo 2>/dev/null
{ cat /tmp/script.out; echo "===VM-SCRIPT-END rc=$rc==="; } > /dev/ttyS1
sync
poweroff -f
sleep 10
EOF
)

case "$BAND$STD" in
  2n)  CH=1;  FREQ=2412; HW=g; EXTRA=$'ieee80211n=1\nht_capab=[HT40+][SHORT-GI-20][SHORT-GI-40]';  COUNTRY=;;
  2ax) CH=1;  FREQ=2412; HW=g; EXTRA=$'ieee80211n=1\nht_capab=[HT40+][SHORT-GI-20][SHORT-GI-40]\nieee80211ax=1\nhe_oper_chwidth=0';  COUNTRY=;;
  5n)  CH=36; FREQ=5180; HW=a; EXTRA=$'ieee80211n=1\nht_capab=[HT40+][SHORT-GI-20][SHORT-GI-40]';  COUNTRY=FR;;
  5ac) CH=36; FREQ=5180; HW=a; EXTRA=$'ieee80211n=1\nht_capab=[HT40+][SHORT-GI-20][SHORT-GI-40]\nieee80211ac=1\nvht_capab=[SHORT-GI-80]\nvht_oper_chwidth=1\nvht_oper_centr_freq_seg0_idx=42'; COUNTRY=FR;;
  5ax) CH=36; FREQ=5180; HW=a; EXTRA=$'ieee80211n=1\nht_capab=[HT40+][SHORT-GI-20][SHORT-GI-40]\nieee80211ac=1\nvht_capab=[SHORT-GI-80]\nvht_oper_chwidth=1\nvht_oper_centr_freq_seg0_idx=42\nieee80211ax=1\nhe_oper_chwidth=1\nhe_oper_centr_freq_seg0_idx=42'; COUNTRY=FR;;
esac
HOSTAPD_CONF="interface=wlan0
driver=nl80211
ctrl_interface=/run/hostapd
ssid=boxapi-test
hw_mode=$HW
channel=$CH
${COUNTRY:+country_code=$COUNTRY
ieee80211d=1
}wmm_enabled=1
$EXTRA
"
WPA_CONF="ctrl_interface=/run/wpa_supplicant
network={
  ssid=\"boxapi-test\"
  key_mgmt=NONE
  scan_ssid=1
  scan_freq=$FREQ
  freq_list=$FREQ
}
"
VMCONF="MODS=\"$(for m in "${MODS[@]}"; do printf '/lib/modules/%s ' "$(basename "$m")"; done)\"
COUNTRY=$COUNTRY
BAND=$BAND
STD=$STD"

# base cache key: every input file's content + the init + configs
KEY=$( { echo "$KVER"; sha256sum "$VMLINUZ" /bin/busybox $BINS $LIBS "${MODS[@]}" "$REGDB" 2>/dev/null;
         echo "$INIT"; echo "$HOSTAPD_CONF"; echo "$WPA_CONF"; echo "$VMCONF"; } | sha256sum | cut -c1-16)
BASE="$OUT/base-$KEY.cpio"
if [ ! -s "$BASE" ]; then
  log "building base initramfs $BASE"
  ST=$(mktemp -d "$OUT/stage.XXXXXX")
  mkdir -p "$ST"/{bin,sbin,usr/bin,usr/sbin,lib/modules,lib/firmware,etc,proc,sys,dev,run,tmp}
  cp /bin/busybox "$ST/bin/busybox"
  for f in $BINS; do mkdir -p "$ST$(dirname "$f")"; cp -L "$f" "$ST$f"; done
  for l in $LIBS; do mkdir -p "$ST$(dirname "$l")"; cp -L "$l" "$ST$l"; done
  # make /usr/sbin/iw etc. reachable under the usual names even if readlink moved them
  for b in hostapd wpa_supplicant wpa_cli iw ip; do [ -e "$ST/usr/sbin/$b" ] || ln -sf "$(readlink -f /usr/sbin/$b)" "$ST/usr/sbin/$b"; done
  for b in curl strace; do [ -e "$ST/usr/bin/$b" ] || ln -sf "$(readlink -f /usr/bin/$b)" "$ST/usr/bin/$b"; done
  for m in "${MODS[@]}"; do cp "$m" "$ST/lib/modules/"; done
  [ -f "$REGDB" ] && cp -L "$REGDB" "$ST/lib/firmware/regulatory.db" && cp -L "$REGDB.p7s" "$ST/lib/firmware/regulatory.db.p7s" 2>/dev/null || true
  printf '%s\n' "$INIT" > "$ST/init"; chmod +x "$ST/init"
  printf '%s' "$HOSTAPD_CONF" > "$ST/etc/hostapd.conf"
  printf '%s' "$WPA_CONF" > "$ST/etc/wpa_supplicant.conf"
  printf '%s\n' "$VMCONF" > "$ST/etc/vm.conf"
  echo "root:x:0:0:root:/root:/bin/sh" > "$ST/etc/passwd"
  (cd "$ST" && find . | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet) > "$BASE.tmp"
  mv "$BASE.tmp" "$BASE"; rm -rf "$ST"
  # drop stale bases
  find "$OUT" -maxdepth 1 -name 'base-*.cpio' ! -name "base-$KEY.cpio" -delete
fi

# ---------------------------------------------------------------- per-run overlay
ST=$(mktemp -d "$OUT/run.XXXXXX")
trap 'rm -rf "$ST"' EXIT
cp "$RUN" "$ST/run.sh"; chmod +x "$ST/run.sh"
for a in "${ADDS[@]}"; do
  src=${a%%:*}; dst=${a#*:}
  [ "$src" != "$a" ] && [ -n "$dst" ] || { echo "vm.sh: --add SRC:DEST ($a)" >&2; exit 90; }
  [ -e "$src" ] || { echo "vm.sh: no such file $src" >&2; exit 90; }
  mkdir -p "$ST$(dirname "/$dst")"; cp -rL "$src" "$ST/$dst"
done
(cd "$ST" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet) > "$OUT/overlay.cpio"
cat "$BASE" "$OUT/overlay.cpio" > "$OUT/initrd.cpio"

# ---------------------------------------------------------------- boot
rm -f "$OUT/result.txt" "$OUT/console.log"
T1=$(date +%s.%N)
log "booting $KVER (band=$BAND std=$STD, timeout ${TIMEOUT}s)"
set +e
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 -accel tcg -m "$MEM" -cpu max -smp 1 \
  -kernel "$VMLINUZ" -initrd "$OUT/initrd.cpio" \
  -append "console=ttyS0 rdinit=/init quiet loglevel=1 panic=-1 tsc=reliable mitigations=off" \
  -nographic -no-reboot -nodefaults -serial stdio -serial "file:$OUT/result.txt" \
  -monitor none </dev/null > "$OUT/console.log" 2>&1
qrc=$?
set -e
T2=$(date +%s.%N)
sed -i 's/\r$//' "$OUT/console.log"
log "$(awk -v a="$T0" -v b="$T1" -v c="$T2" 'BEGIN{printf "prepare %.1fs, VM %.1fs", b-a, c-b}')"
if [ -s "$OUT/result.txt" ] && grep -q '^===VM-SCRIPT-END rc=' "$OUT/result.txt"; then
  RES="$OUT/result.txt"
elif grep -q '^===VM-SCRIPT-END rc=' "$OUT/console.log"; then
  RES=$(mktemp); sed -n '/^===VM-SCRIPT-BEGIN===$/,$p' "$OUT/console.log" | sed 1d > "$RES"
else
  echo "vm.sh: VM produced no result (qemu rc=$qrc); console tail:" >&2
  tail -40 "$OUT/console.log" >&2
  exit 92
fi
rc=$(sed -n 's/^===VM-SCRIPT-END rc=\([0-9]*\)===$/\1/p' "$RES" | tail -1)
sed '/^===VM-SCRIPT-END rc=[0-9]*===$/,$d' "$RES"
exit "${rc:-92}"
