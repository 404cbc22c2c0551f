#!/usr/bin/env bash
# make bench, token part: tokens per second of one boxapi-authority (in-memory store, then Redis
# as the store) against node oidc-provider 9.x (tests/interop's setup) doing the same grant on
# this machine: client_credentials, private_key_jwt (a fresh ES256 client assertion per request,
# signed ahead of time), a JWT access token signed with ES256, over HTTPS with the same
# certificate; the same load client (wrk -t1, one fresh assertion per request, bench/token.lua).
# Prints medians of REPEAT runs and the ratios authority/oidc-provider.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-3s}
CONNS=${CONNS:-32}
PER_RUN=${PER_RUN:-40000}   # fresh assertions per run (a run that uses them all is reported)
BOX=${BOXAPI_BIN:-target/release/boxapi}
AUTHORITY=${AUTHORITY_BIN:-target/release/boxapi-authority}
work=$(mktemp -d)
. bench/setup.sh
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 8192

command -v node >/dev/null || { echo "bench/tokens.sh needs node and npm (as tests/interop does)" >&2; exit 1; }
[ -d tests/interop/node_modules/oidc-provider ] || (cd tests/interop && npm install --no-audit --no-fund >/dev/null)
./certs/make-dev-certs.sh "$work" >/dev/null
"$BOX" keygen --alg ES256 --kid signer --out "$work" >/dev/null
tools=()
for i in $(seq "$REPEAT"); do
    "$BOX" keygen --alg ES256 --kid "bench-$i" --out "$work" >/dev/null
    tools+=("bench-$i")
done
mem_port=18741; redis_authority_port=18742; oidc_port=18743; redis_port=18744

redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --loglevel warning >"$work/redis.log" 2>&1 & pids+=("$!")

authority_config() { # name port [store table]
    mkdir -p "$work/$1"
    {
        cat <<CONF
[server]
server_names = ["localhost"]
cert = "$work/server.pem"
key = "$work/server.key"
state_dir = "$work/$1/state"
control_socket = "$work/$1/control.sock"
CONF
        authority_conf_tail "$work/signer.private.jwk"
        cat <<CONF
tokens_per_hour = 100000
[authority]
listen = ["127.0.0.1:$2"]
$3
CONF
        for t in "${tools[@]}"; do
            printf '[[tool]]\nid = "%s"\nscopes = ["access", "counters"]\nkeys = ["%s/%s.jwk"]\n' "$t" "$work" "$t"
        done
    } > "$work/$1/authority.toml"
    "$AUTHORITY" serve --config "$work/$1/authority.toml" 2>"$work/$1/log" & pids+=("$!")
}
authority_config memory $mem_port ""
authority_config redis $redis_authority_port "[authority.store]
kind = \"redis\"
url = \"redis://127.0.0.1:$redis_port/0\""
keys=$(printf "$work/%s.private.jwk," "${tools[@]}")
(cd tests/interop && ISSUER_KEY="$work/signer.private.jwk" TOOL_KEYS="${keys%,}" AUDIENCE=https://box.bench \
    PORT=$oidc_port CERT="$work/server.pem" CERT_KEY="$work/server.key" \
    exec node bench-provider.mjs >"$work/oidc.log" 2>&1) & pids+=("$!")
for port in $mem_port $redis_authority_port $oidc_port; do
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
done

# Fresh assertions, made now (an authority refuses assertions made before it started).
for t in "${tools[@]}"; do
    (cd tests/interop && KEY="$work/$t.private.jwk" TOOL=$t AUD=https://authority.bench/v1/token COUNT=$PER_RUN \
        OUT="$work/$t.authority" node bench-assertions.mjs)
    (cd tests/interop && KEY="$work/$t.private.jwk" TOOL=$t AUD="https://localhost:$oidc_port/token" COUNT=$PER_RUN \
        OUT="$work/$t.oidc" node bench-assertions.mjs)
done

# One token from each server first: the grant works and gives a JWT.
check() { # port path bodyfile
    local body; body=$(sed -n "${PER_RUN}p" "$3")
    local out; out=$(curl -s --cacert "$work/ca.pem" -d "$body" "https://localhost:$1$2")
    if ! grep -q '"access_token":"ey[^".]*\.[^".]*\.' <<<"$out"; then
        echo "no token from port $1: $out" >&2; cat "$work"/*/log "$work/oidc.log" >&2 | tail -20; exit 1
    fi
}
check $mem_port /v1/token "$work/bench-1.authority"
check $redis_authority_port /v1/token "$work/bench-1.authority"
check $oidc_port /token "$work/bench-1.oidc"

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# One run; prints "tokens_per_s p50_ms p99_ms".
run() { # port path bodyfile
    local out
    out=$(THREADS=1 BODIES=$3 TOKEN_PATH=$2 wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s bench/token.lua "https://localhost:$1")
    if grep -q "Non-2xx" <<<"$out"; then
        echo "refused requests (out of fresh assertions? raise PER_RUN): $out" >&2; exit 1
    fi
    local total; total=$(awk '/requests in/ {print $1}' <<<"$out")
    if [ "$total" -ge $((PER_RUN - 1)) ]; then echo "used all $PER_RUN assertions: raise PER_RUN" >&2; exit 1; fi
    echo "$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '$1 == "50%" {print $2}' <<<"$out" | to_ms) $(awk '$1 == "99%" {print $2}' <<<"$out" | to_ms)"
}

declare -A R
for server in memory redis oidc; do
    case $server in
        memory) port=$mem_port path=/v1/token suffix=authority ;;
        redis) port=$redis_authority_port path=/v1/token suffix=authority ;;
        oidc) port=$oidc_port path=/token suffix=oidc ;;
    esac
    rows=""
    # Run i uses tool i's assertions (each used once per server; each tool's quota is its own).
    for t in "${tools[@]}"; do rows+="$(run $port $path "$work/$t.$suffix")"$'\n'; done
    for col in 1 2 3; do R[$server,$col]=$(awk -v c=$col 'NF {print $c}' <<<"$rows" | median); done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }'; }
line() { printf '%-30s %14s %14s %14s\n' "$1" "$2" "$3" "$4"; }
echo
echo "tokens: client_credentials + private_key_jwt (fresh ES256 assertion per request), JWT access token (ES256), TLS 1.3"
echo "client: wrk -t1 -c$CONNS -d$DURATION (bench/token.lua); medians of $REPEAT runs; $(nproc) cores"
echo "servers: boxapi-authority $("$AUTHORITY" --version | awk '{print $2}') (in-memory store; Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on loopback),"
echo "         oidc-provider $(node -p 'require("./tests/interop/node_modules/oidc-provider/package.json").version') on node $(node --version) (one process)"
echo
line "" "authority" "auth.+Redis" "oidc-provider"
line "tokens/s" "${R[memory,1]}" "${R[redis,1]}" "${R[oidc,1]}"
line "p50 latency (ms)" "${R[memory,2]}" "${R[redis,2]}" "${R[oidc,2]}"
line "p99 latency (ms)" "${R[memory,3]}" "${R[redis,3]}" "${R[oidc,3]}"
echo
echo "ratio authority / oidc-provider:          $(ratio "${R[memory,1]}" "${R[oidc,1]}")x (goal: at least 5x)"
echo "ratio authority with Redis / oidc-provider: $(ratio "${R[redis,1]}" "${R[oidc,1]}")x"
