#!/usr/bin/env bash
# make bench: boxapi against nginx (Debian package) serving the same card JSON over TLS 1.3 with
# the same ECDSA P-256 certificate, driven by the same load client (wrk, Debian package), in
# one run on this machine. Prints medians of REPEAT runs and the ratio boxapi/nginx.
# boxapi verifies a bearer token on every request; nginx serves a static file.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-5s}
BOX=${BOXAPI_BIN:-target/release/boxapi}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 8192

# Free ports, chosen now: a fixed pair collides with whatever else runs on the machine.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
box_port=$(free_port); nginx_port=$(free_port)
while [ "$nginx_port" = "$box_port" ]; do nginx_port=$(free_port); done
. bench/setup.sh
bench_setup "$box_port"

now_ms() { date +%s%3N; }
# Start-to-ready: from spawn to the first accepted TCP connection.
# Polled without a pause (the figure is in milliseconds), for 10 s at most: a server that died at
# start must fail the bench, not spin a core for ever.
ready_ms() {
    local port=$1 t0=$2
    until (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do
        if (( $(now_ms) - t0 > 10000 )); then echo "bench: nothing listens on port $port after 10 s" >&2; exit 1; fi
    done
    echo $(( $(now_ms) - t0 ))
}
kb() { awk -v k="$2" '$1 == k":" {print $2}' /proc/"$1"/status; }

t0=$(now_ms); "$BOX" serve --config "$work/boxapi.toml" 2>"$work/boxapi.log" & box_pid=$!; pids+=("$box_pid")
box_ready=$(ready_ms $box_port "$t0")
curl -sf --cacert "$work/ca.pem" -H "Authorization: Bearer $token" "https://localhost:$box_port/v1/access" > "$work/card.json"

nginx_site "$work/card.json" /v1/access
{ nginx_conf_head; cat <<CONF
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$nginx_port ssl;
        ssl_certificate $work/server.pem;
        ssl_certificate_key $work/server.key;
        ssl_protocols TLSv1.3;
        # Both servers let a client resume its session (rustls keeps 256 sessions by default),
        # as browsers do; wrk resumes whenever the server offers it.
        ssl_session_cache shared:SSL:1m;
        ssl_session_tickets on;
        root $work/nginx/www;
        location = /v1/access {
            default_type application/json;
            add_header Cache-Control no-store;
            add_header X-Content-Type-Options nosniff;
        }
    }
}
CONF
} > "$work/nginx/nginx.conf"
t0=$(now_ms); nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/nginx/stderr" & pids+=("$!")
nginx_ready=$(ready_ms $nginx_port "$t0")
sleep 0.3
nginx_pid=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" | head -1)  # the worker serves
box_idle=$(kb "$box_pid" VmRSS); nginx_idle=$(( $(kb "$nginx_pid" VmRSS) + $(kb "$(cat "$work/nginx/nginx.pid")" VmRSS) ))

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# CPU time a server process has used so far, in clock ticks: "user system".
ticks() { awk '{print $14, $15}' /proc/"$1"/stat; }
TICK_HZ=$(getconf CLK_TCK)

# One wrk run; prints "rps p50_ms p99_ms peak_rss_kb requests_per_cpu_second user_us system_us"
# (the last two: the server's CPU time per request, user and system).
# The last is the server's own CPU time per answer: on a shared machine (wrk itself takes one of
# two cores) throughput follows whatever else runs, while the work a server does per request
# does not, so that column is the steadier comparison (docs/performance.md).
run() {
    local port=$1 pid=$2 conns=$3 close=$4
    echo 5 > /proc/"$pid"/clear_refs   # resets VmHWM: peak RSS of this run only
    local args=(-t2 -c"$conns" -d"$DURATION" --latency -H "Authorization: Bearer $token")
    [ "$close" = 1 ] && args+=(-H "Connection: close")
    local u0 s0 u1 s1
    read -r u0 s0 < <(ticks "$pid")
    local out; out=$(wrk "${args[@]}" "https://localhost:$port/v1/access")
    read -r u1 s1 < <(ticks "$pid")
    local rps p50 p99 answered
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out" | to_ms)
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out" | to_ms)
    answered=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers: $out" >&2; exit 1; fi
    echo "$rps $p50 $p99 $(kb "$pid" VmHWM) $(awk -v n="$answered" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$TICK_HZ" \
        'BEGIN { if (u + s > 0 && n > 0) printf "%.0f %.2f %.2f", n / ((u + s) / hz), u / hz / n * 1e6, s / hz / n * 1e6; else print "0 - -" }')"
}

declare -A R
scenario() {
    local name=$1 conns=$2 close=$3
    # The two servers take turns, run after run: a change in the machine's load (it is shared)
    # then falls on both rather than on whichever ran second.
    declare -A rows=()
    for _ in $(seq "$REPEAT"); do
        for server in boxapi nginx; do
            local port=$box_port pid=$box_pid
            [ $server = nginx ] && port=$nginx_port && pid=$nginx_pid
            rows[$server]+="$(run $port "$pid" "$conns" "$close")"$'\n'
        done
    done
    for server in boxapi nginx; do
        for col in 1 2 3 4 5 6 7; do
            R[$name,$server,$col]=$(awk -v c=$col 'NF {print $c}' <<<"${rows[$server]}" | median)
        done
    done
}
scenario new 8 1
scenario keepalive 32 0

# Floods: 1,000 keep-alive connections from one terminal (127.0.0.1) by boxapi-loadgen, not wrk:
# wrk busy-polls a connection whose handshake the server delays (boxapi makes connections over a
# terminal's share wait for room), and that spin takes the CPU the servers need (measured: wrk
# from 1.4 to 2.6 cores' worth of ticks when 6 of 70 connections wait). The second terminal
# (127.0.0.2) keeps 32 connections of its own. Rates are whole answers per second.
LG=${LOADGEN_BIN:-target/release/boxapi-loadgen}
FLOOD_SECONDS=${FLOOD_SECONDS:-5}
lg() {
    local port=$1; shift
    "$LG" --connect "127.0.0.1:$port" --name localhost --ca "$work/ca.pem" --path /v1/access \
        --header "Authorization: Bearer $token" --seconds "$FLOOD_SECONDS" "$@" | sed -n 's/.*rate=\([0-9]*\).*/\1/p'
}
flood_scenario() {
    local name=$1 port=$2 pid=$3
    F[$name,normal]=$(lg "$port" --source 127.0.0.2 --connections 32)
    echo 5 > /proc/"$pid"/clear_refs
    F[$name,flood]=$(lg "$port" --connections 1000)
    F[$name,rss]=$(kb "$pid" VmHWM)
    # The flood again, with the second terminal's 32 connections starting a second into it.
    lg "$port" --connections 1000 --seconds $((FLOOD_SECONDS + 2)) >/dev/null &
    local flood_pid=$!
    sleep 1
    F[$name,second]=$(lg "$port" --source 127.0.0.2 --connections 32)
    wait "$flood_pid" 2>/dev/null || true
}
declare -A F
# QUICK=1: the two rate scenarios only (for trying a change; `make bench` runs everything).
if [ "${QUICK:-0}" != 1 ]; then
flood_scenario boxapi $box_port "$box_pid"
flood_scenario nginx $nginx_port "$nginx_pid"

# Probes from a second terminal (127.0.0.2) during the same kind of flood from the first, each on
# a new connection; the slowest is reported (goal: under a second).
second_terminal_ms() {
    local port=$1 worst=0 t
    FLOOD_SECONDS=6 lg "$port" --connections 1000 >/dev/null &
    local flood_pid=$!
    sleep 1.5
    for _ in 1 2 3 4 5 6 7 8; do
        t=$(curl -s -o /dev/null -w '%{time_total}' --max-time 5 --interface 127.0.0.2 --cacert "$work/ca.pem" \
            -H "Authorization: Bearer $token" "https://localhost:$port/v1/access" || echo 5)
        t=$(awk -v t="$t" 'BEGIN { printf "%d", t * 1000 }')
        [ "$t" -gt "$worst" ] && worst=$t
        sleep 0.4
    done
    wait "$flood_pid" 2>/dev/null || true
    echo "$worst"
}
box_second=$(second_terminal_ms $box_port)
nginx_second=$(second_terminal_ms $nginx_port)

# Soak: RSS after warm-up, then after SOAK_REQUESTS more keep-alive requests (bounded in time).
SOAK_REQUESTS=${SOAK_REQUESTS:-1000000}
SOAK_MAX_SECONDS=${SOAK_MAX_SECONDS:-90}
wrk -t2 -c32 -d3s -H "Authorization: Bearer $token" "https://localhost:$box_port/v1/access" >/dev/null
rss_before=$(kb "$box_pid" VmRSS)
soak_secs=$(awk -v n="$SOAK_REQUESTS" -v r="${R[keepalive,boxapi,1]}" -v m="$SOAK_MAX_SECONDS" \
    'BEGIN { s = int(n / (r > 0 ? r : 1) * 1.15) + 1; if (s > m) s = m; print s }')
soak_out=$(wrk -t2 -c32 -d"${soak_secs}s" -H "Authorization: Bearer $token" "https://localhost:$box_port/v1/access")
soak_done=$(awk '/requests in/ {print $1}' <<<"$soak_out")
rss_after=$(kb "$box_pid" VmRSS)
soak_growth=$(awk -v a="$rss_before" -v b="$rss_after" -v n="$soak_done" \
    'BEGIN { if (n > 0 && a > 0) printf "%.3f", (b - a) / a * 100 * 1000000 / n; else print "-" }')

fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
line() { printf '%-46s %12s %12s %8s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }
echo
echo "machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//'), $(uname -r)"
echo "client: wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), -t2 -d$DURATION --latency, TLS 1.3, ECDSA P-256; medians of $REPEAT runs, the servers taking turns"
echo "  new connections: wrk -t2 -c8 -H 'Connection: close' (one request per connection; TLS sessions resumed by both)"
echo "  keep-alive:      wrk -t2 -c32"
echo "  flood:           boxapi-loadgen, 1000 keep-alive connections from 127.0.0.1 for ${FLOOD_SECONDS}s (boxapi max_connections=256,"
echo "                   a quarter per terminal); a second terminal, 127.0.0.2, with 32 connections"
echo "servers: boxapi $("$BOX" --version | awk '{print $2}') (1 thread, verifies an ES256 token per request), nginx $(nginx -v 2>&1 | sed 's/.*\///') (worker_processes 1, static file)"
echo
printf '%-46s %12s %12s %8s\n' "" boxapi nginx ratio
line "new-connection requests/s" "${R[new,boxapi,1]}" "${R[new,nginx,1]}"
line "new-connection p50 latency (ms)" "${R[new,boxapi,2]}" "${R[new,nginx,2]}"
line "new-connection p99 latency (ms)" "${R[new,boxapi,3]}" "${R[new,nginx,3]}"
line "new-connection peak RSS (kB)" "${R[new,boxapi,4]}" "${R[new,nginx,4]}"
line "keep-alive requests/s (32 conns)" "${R[keepalive,boxapi,1]}" "${R[keepalive,nginx,1]}"
line "keep-alive p50 latency (ms)" "${R[keepalive,boxapi,2]}" "${R[keepalive,nginx,2]}"
line "keep-alive p99 latency (ms)" "${R[keepalive,boxapi,3]}" "${R[keepalive,nginx,3]}"
line "keep-alive peak RSS (kB)" "${R[keepalive,boxapi,4]}" "${R[keepalive,nginx,4]}"
line "new-connection requests per server CPU-second" "${R[new,boxapi,5]}" "${R[new,nginx,5]}"
line "keep-alive requests per server CPU-second" "${R[keepalive,boxapi,5]}" "${R[keepalive,nginx,5]}"
line "keep-alive user CPU per request (us)" "${R[keepalive,boxapi,6]}" "${R[keepalive,nginx,6]}"
line "keep-alive system CPU per request (us)" "${R[keepalive,boxapi,7]}" "${R[keepalive,nginx,7]}"
line "idle RSS after start (kB; nginx: master+worker)" "$box_idle" "$nginx_idle"
line "start-to-ready (ms)" "$box_ready" "$nginx_ready"
[ "${QUICK:-0}" = 1 ] && exit 0
line "second terminal alone, requests/s (32 conns)" "${F[boxapi,normal]}" "${F[nginx,normal]}"
line "flood (1000 conns) requests/s" "${F[boxapi,flood]}" "${F[nginx,flood]}"
line "flood (1000 conns) peak RSS (kB)" "${F[boxapi,rss]}" "${F[nginx,rss]}"
line "second terminal during the flood, requests/s" "${F[boxapi,second]}" "${F[nginx,second]}"
line "second terminal during the flood, worst (ms)" "$box_second" "$nginx_second"
echo
for server in boxapi nginx; do
    echo "$server during the flood: serves $(ratio "${F[$server,flood]}" "${F[$server,normal]}")x its normal rate (goal >= 0.5); the second terminal gets $(ratio "${F[$server,second]}" "${F[$server,normal]}")x of its own"
done
echo "soak: $soak_done requests in ${soak_secs}s; VmRSS $rss_before -> $rss_after kB: $soak_growth % per million requests (goal < 1)"
