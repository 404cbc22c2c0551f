#!/bin/bash
# make test-wifi: the real-kernel Wi-Fi test. A qemu-system VM (TCG: no KVM needed) boots
# Debian's kernel with mac80211_hwsim: hostapd runs an open 2.4 GHz HT40 AP on wlan0 and
# wpa_supplicant associates wlan1 from another network namespace (vm.sh). boxapi (this build)
# serves wlan0 as the box; the station asks for /v1/access with a token made by `boxapi token`,
# and this script checks what the card says of the station's Wi-Fi link and of the radio.
# Needs root (packages, /boot). About 20-60 s once the image is cached, more on a loaded machine.
#   tests/wifi/run.sh [BOXAPI_BINARY]      (default target/debug/boxapi, built by make test)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/target/debug/boxapi}
OUT=${OUT:-$root/target/wifi-vm}
[ -x "$bin" ] || { echo "run.sh: no $bin (cargo build first)" >&2; exit 1; }
mkdir -p "$OUT"
work=$(mktemp -d "$OUT/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
box=$work/box
mkdir -p "$box/lib"
# The binary and the shared libraries it needs (a debug build is large: stripped here).
strip -o "$box/boxapi" "$bin"
for l in $(ldd "$bin" | awk '/=> \//{print $3} /^\t\//{print $1}'); do
    mkdir -p "$box/libs$(dirname "$l")"; cp -L "$l" "$box/libs$l"
done
"$root/certs/make-dev-certs.sh" "$box/certs" DNS:box.test IP:192.168.50.1 >/dev/null
rm -f "$box/certs/ca.key"
"$bin" keygen --alg ES256 --kid vmtool --out "$box/keys" >/dev/null
"$bin" token --key "$box/keys/vmtool.private.jwk" --tool vmtool --scope "access counters" \
    --aud https://box.test --iss https://issuer.test > "$box/token"
adds=(--add "$box/boxapi:/box/boxapi" --add "$box/certs:/box/certs" --add "$box/keys:/box/keys"
      --add "$box/token:/box/token")
# Libraries go where ldd found them (most are already in the image, for curl and hostapd).
for l in $(cd "$box/libs" && find . -type f); do adds+=(--add "$box/libs/${l#./}:/${l#./}"); done
start=$(date +%s)
set +e
"$here/vm.sh" --out "$OUT" --timeout "${VM_TIMEOUT:-400}" --quiet "${adds[@]}" --run "$here/in-vm.sh" > "$work/out.txt" 2>&1
rc=$?
set -e
took=$(( $(date +%s) - start ))
if [ $rc -ne 0 ]; then
    echo "test-wifi: the VM failed (vm.sh exit $rc) after ${took}s:"; cat "$work/out.txt"
    [ -f "$OUT/console.log" ] && tail -30 "$OUT/console.log"
    exit 1
fi
python3 - "$work/out.txt" "$took" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
def section(name, end):
    return text.split(f"==={name}===\n", 1)[1].split(f"\n==={end}===", 1)[0].strip()
fails = []
def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)
try:
    card = json.loads(section("CARD", "COUNTERS"))
    counters = json.loads(section("COUNTERS", "END"))
except Exception as e:
    print(text)
    sys.exit(f"test-wifi: no card from the VM ({e})")
c, w = card["client"], card["client"]["wifi"]
print("client:", json.dumps(c))
print("wifi:  ", json.dumps(card["wifi"]))
check(c["connection"] == "wifi" and c["interface"] == "wlan0", "the station is a Wi-Fi terminal on wlan0")
check(isinstance(w, dict), "client.wifi is an object")
w = w or {}
for k in ["band", "standard", "signal_dbm", "tx_kbps", "rx_kbps"]:
    check(k in w, f"client.wifi has {k}")
check(w.get("band") == "2.4GHz", "band 2.4GHz (channel 1)")
check(w.get("standard") == "n", "standard n (HT rates)")
check(isinstance(w.get("signal_dbm"), int) and w["signal_dbm"] < 0, "signal_dbm negative")
check(isinstance(w.get("tx_kbps"), int) and w["tx_kbps"] > 0, "tx_kbps > 0")
check(isinstance(w.get("rx_kbps"), int) and w["rx_kbps"] > 0, "rx_kbps > 0")
check(w.get("channel") == 1 and w.get("frequency_mhz") == 2412 and w.get("channel_width_mhz") == 40, "channel 1, 2412 MHz, 40 MHz wide")
if isinstance(w.get("tx_kbps"), int) and isinstance(w.get("rx_kbps"), int):
    check(c["link_kbps"] == min(w["tx_kbps"], w["rx_kbps"]), "link_kbps = min(tx_kbps, rx_kbps)")
radios = card["wifi"]["radios"]
check(card["wifi"]["enabled"] is True and len(radios) == 1, "one radio listed (the AP side's phy), Wi-Fi enabled")
r = radios[0] if radios else {}
check(r.get("band") == "2.4GHz" and r.get("enabled") is True and r.get("standard") == "n", "radio: 2.4GHz, enabled, n")
check(r.get("channel") == 1 and r.get("channel_width_mhz") == 40, "radio: channel 1, 40 MHz")
check(counters["client"] is not None and counters["client"]["rx_bytes"] > 0, "the station's own counters (alone on wlan0)")
print(f"test-wifi: {len(fails)} failed, VM run {sys.argv[2]} s")
if fails:
    print(text)
    sys.exit(1)
PY
