#!/usr/bin/env bash
# make bench, fleet part (issue 23): what boxes polling `GET /v1/fleet` cost the authority. A real
# boxapi-authority with [enrolment] (device CA and CRL from tests/field/make-pki.sh) and a
# published fleet document; the load client is boxapi-loadgen with a box's device certificate,
# making what a box makes: a NEW mutual-TLS connection for each poll (a box polls every 5 minutes),
# without TLS session resumption (among 33,000 polls a second, the authority's session cache of
# 256 has long forgotten a box's session five minutes later; another replica never had it), and
# `If-None-Match` with the version it holds, answered 304. Compared in the same run, the servers
# taking turns, with the same authority answering the whole document (200), and with nginx serving
# the same file over the same mutual TLS (device CA, CRL) as a 304. Also, for scale, the
# authority's 304 on a resumed session and on a kept-alive connection (what boxes do not get).
# The figure that sizes the authority is answers per server CPU-second (= per core): the machine is
# shared and the load client takes a core, so answers per second follow whatever else runs.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
CONNS=${CONNS:-16}
BOX=${BOXAPI_BIN:-target/release/boxapi}
AUTHORITY=${AUTHORITY_BIN:-target/release/boxapi-authority}
LG=${LOADGEN_BIN:-target/release/boxapi-loadgen}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 8192

. bench/setup.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nginx_port=$(free_port)
./tests/field/make-pki.sh "$work" >/dev/null
# The operator's root key signs the registry and the fleet document.
for k in root signer; do "$BOX" keygen --alg EdDSA --kid $k --out "$work" >/dev/null; done
"$BOX" keygen --alg ES256 --kid tool --out "$work" >/dev/null
echo '{"version": 1, "tools": [{"id": "tool"}]}' > "$work/registry.json"
"$BOX" registry sign --key "$work/root.private.jwk" --in "$work/registry.json" --out "$work/registry.jws"
echo '{"version": 2, "tools": [{"id": "tool"}], "restriction": null}' > "$work/fleet.json"
"$BOX" fleet sign --key "$work/root.private.jwk" --in "$work/fleet.json" --out "$work/fleet.jws"
openssl rand -base64 32 > "$work/tsig.key"
# [acme] and [dns] are required with [enrolment]; they are never reached here (nothing enrols).
{
cat <<CONF
[server]
cert = "auth.pem"
key = "auth.key"
state_dir = "state"
control_socket = "control.sock"
CONF
authority_conf_tail signer.private.jwk
cat <<CONF
[registry]
file = "registry.jws"
root_key = "root.jwk"
[authority]
listen = ["127.0.0.1:0"]
[enrolment]
device_ca = "device-ca.pem"
device_crls = ["device-ca.crl"]
zone = "box.bench"
[acme]
directory = "https://127.0.0.1:1/dir"
account = "acme-account.json"
contact = ["mailto:ops@isp.example"]
[dns]
server = "127.0.0.1:1"
tsig_name = "boxapi-update"
tsig_secret_file = "tsig.key"
CONF
} > "$work/authority.toml"
"$AUTHORITY" serve --config "$work/authority.toml" 2>"$work/authority.log" & auth_pid=$!; pids+=("$auth_pid")

nginx_site "$work/fleet.jws" /v1/fleet
{ nginx_conf_head; cat <<CONF
    server {
        listen 127.0.0.1:$nginx_port ssl;
        ssl_certificate $work/auth.pem;
        ssl_certificate_key $work/auth.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_verify_client on;
        ssl_client_certificate $work/device-ca.pem;
        ssl_crl $work/device-ca.crl;
        root $work/nginx/www;
        location = /v1/fleet {
            default_type application/jose;
            add_header Cache-Control no-store;
        }
    }
}
CONF
} > "$work/nginx/nginx.conf"
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/nginx/stderr" & pids+=("$!")
# The authority's port is the kernel's choice, read from its log (a port picked free beforehand
# can be taken by then).
auth_port=
for _ in $(seq 100); do
    auth_port=$(sed -n 's/.*"addr":"127.0.0.1:\([0-9]*\)",.*"event":"listening".*/\1/p' "$work/authority.log")
    [ -n "$auth_port" ] && break; sleep 0.1
done
[ -n "$auth_port" ] || { echo "bench/fleet.sh: the authority did not start" >&2; cat "$work/authority.log" >&2; exit 1; }
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$nginx_port") 2>/dev/null && break; sleep 0.1; done
sleep 0.3
nginx_pid=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" | head -1)  # the worker serves

"$BOX" ctl --socket "$work/control.sock" publish-fleet "$work/fleet.jws" >/dev/null
get() { # port [etag]: status and ETag of one poll
    curl -s -o /dev/null -D - --cacert "$work/op-ca.pem" --cert "$work/device.pem" --key "$work/device.key" \
        ${2:+-H "If-None-Match: $2"} "https://localhost:$1/v1/fleet" | tr -d '\r' |
        awk 'NR == 1 {s = $2} tolower($1) == "etag:" {e = $2} END {print s, e}'
}
read -r s auth_etag < <(get $auth_port)
read -r s2 _ < <(get $auth_port "$auth_etag")
read -r s3 nginx_etag < <(get $nginx_port)
read -r s4 _ < <(get $nginx_port "$nginx_etag")
if [ "$s $s2 $s3 $s4" != "200 304 200 304" ] || [ "$auth_etag" != '"2"' ]; then
    echo "bench/fleet.sh: expected 200 then 304 from both, got $s $s2 (ETag $auth_etag) and $s3 $s4" >&2
    tail -5 "$work/authority.log" "$work/nginx/error.log" >&2; exit 1
fi

ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
TICK_HZ=$(getconf CLK_TCK)
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# One run; prints "answers_per_s answers_per_server_cpu_second". Every answer must be the expected
# status: a refused certificate or an error fails the bench.
run() { # port pid expect etag per_connection resumption
    local t0 t1 out
    t0=$(ticks "$2")
    out=$("$LG" --connect "127.0.0.1:$1" --name localhost --ca "$work/op-ca.pem" \
        --cert "$work/device.pem" --key "$work/device.key" --path /v1/fleet --connections "$CONNS" \
        --seconds "$SECONDS_PER_RUN" --expect "$3" ${4:+--header "If-None-Match: $4"} \
        --per-connection "$5" --resumption "$6")
    t1=$(ticks "$2")
    local requests ok
    requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out")
    ok=$(sed -n 's/.*ok=\([0-9]*\).*/\1/p' <<<"$out")
    if [ "$ok" != "$requests" ] || [ "$requests" = 0 ]; then
        echo "bench/fleet.sh: not every answer was $3: $out" >&2; exit 1
    fi
    awk -v out="$out" -v n="$ok" -v t=$((t1 - t0)) -v hz="$TICK_HZ" 'BEGIN {
        match(out, /rate=[0-9]+/); r = substr(out, RSTART + 5, RLENGTH - 5)
        printf "%s %.0f\n", r, (t > 0 ? n / (t / hz) : 0) }'
}

declare -A R rows
scenarios=(a304 a200 n304 a304resumed a304keepalive)
for _ in $(seq "$REPEAT"); do
    for s in "${scenarios[@]}"; do
        case $s in
            a304) line=$(run $auth_port "$auth_pid" 304 "$auth_etag" 1 off) ;;
            a200) line=$(run $auth_port "$auth_pid" 200 "" 1 off) ;;
            n304) line=$(run $nginx_port "$nginx_pid" 304 "$nginx_etag" 1 off) ;;
            a304resumed) line=$(run $auth_port "$auth_pid" 304 "$auth_etag" 1 on) ;;
            a304keepalive) line=$(run $auth_port "$auth_pid" 304 "$auth_etag" 0 on) ;;
        esac
        rows[$s]+="$line"$'\n'
    done
done
for s in "${scenarios[@]}"; do
    for col in 1 2; do R[$s,$col]=$(awk -v c=$col 'NF {print $c}' <<<"${rows[$s]}" | median); done
done
boxes=$("$BOX" ctl --socket "$work/control.sock" status | python3 -c "import json,sys; print(json.dumps(json.load(sys.stdin).get(\"fleet_boxes\")))")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
line() { printf '%-58s %12s %14s\n' "$1" "$2" "$3"; }
echo
echo "fleet polls: GET /v1/fleet, mutual TLS with a device certificate (ECDSA P-256, device CA + CRL), TLS 1.3"
echo "client: boxapi-loadgen, $CONNS connections for ${SECONDS_PER_RUN}s a run; medians of $REPEAT runs, the scenarios taking turns; $(nproc) cores"
echo "servers: boxapi-authority $("$AUTHORITY" --version | awk '{print $2}') (tokio, all cores), nginx $(nginx -v 2>&1 | sed 's/.*\///') with $(nginx -V 2>&1 | sed -n 's/.*built with \(OpenSSL [^ ]*\).*/\1/p') (worker_processes 1, static file)"
echo
line "" "answers/s" "per CPU-second"
line "authority 304, new connection per poll (what a box does)" "${R[a304,1]}" "${R[a304,2]}"
line "authority 200 (the whole document), new connection" "${R[a200,1]}" "${R[a200,2]}"
line "nginx 304 over the same mutual TLS, new connection" "${R[n304,1]}" "${R[n304,2]}"
line "authority 304, resumed TLS session (not in the field)" "${R[a304resumed,1]}" "${R[a304resumed,2]}"
line "authority 304, kept-alive connection (not in the field)" "${R[a304keepalive,1]}" "${R[a304keepalive,2]}"
echo
echo "authority 304 / nginx 304 per CPU-second: $(ratio "${R[a304,2]}" "${R[n304,2]}")x; authority 304 / its own 200: $(ratio "${R[a304,2]}" "${R[a200,2]}")x"
echo "fleet_boxes at the end (one device identity polled): $boxes"
