#!/bin/sh
# Peak memory (VmHWM) of `boxapi serve` for an idle start and after 50 sequential requests.
#   cross/memory.sh [TARGET]     (no TARGET: the host release build, run natively)
# Under qemu-user the figure includes the emulator itself; the host row is the daemon alone.
set -eu
cd "$(dirname "$0")/.."
target=${1:-}
host=target/release/boxapi
if [ -n "$target" ]; then
    bin=target/cross/$target/release/boxapi
    case $target in
        armv7-*) run="qemu-arm-static $bin" ;; aarch64-*) run="qemu-aarch64-static $bin" ;;
        mipsel-*) run="qemu-mipsel-static $bin" ;; mips-*) run="qemu-mips-static $bin" ;;
        x86_64-*) run=$bin ;;  # native: the daemon alone, as on a box
    esac
else
    run=$host
fi
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
./certs/make-dev-certs.sh "$dir" >/dev/null
$host keygen --alg ES256 --kid t1 --out "$dir" >/dev/null
cat > "$dir/boxapi.toml" <<CONF
[server]
listen = ["127.0.0.1:0"]
server_names = ["localhost"]
cert = "server.pem"
key = "server.key"
state_dir = "state"
control_socket = "control.sock"
rate_limit_per_second = 0
[auth]
audience = "https://box.test"
issuers = ["https://auth.test"]
[[tool]]
id = "t"
origins = ["https://t.example"]
scopes = ["access", "counters"]
keys = ["t1.jwk"]
[metrics]
wan_interface = "lo"
CONF
$run serve --config "$dir/boxapi.toml" 2>"$dir/log" &
pid=$!
i=0
until grep -q '"listening"' "$dir/log" 2>/dev/null; do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done
port=$(sed -n 's/.*"addr":"127.0.0.1:\([0-9]*\)".*/\1/p' "$dir/log" | head -1)
sleep 0.5
idle=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
token=$($host token --key "$dir/t1.private.jwk" --tool t --scope "access counters" --aud https://box.test --iss https://auth.test)
n=0
while [ $n -lt 50 ]; do
    curl -sf --cacert "$dir/ca.pem" -H "Authorization: Bearer $token" "https://localhost:$port/v1/access" >/dev/null
    n=$((n+1))
done
after=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
printf '%-34s idle VmHWM %6s kB   after 50 requests %6s kB\n' "${target:-host (native)}" "$idle" "$after"
