#!/usr/bin/env bash
# start-field.sh DIR — start a throw-away ACME + DNS field in DIR (used by the enrolment tests,
# crates/authority/tests/enrolment.rs, crates/systest/tests/field.rs, tests/field/browser.sh; `make deps`
# installs the packages, else this does):
#   * Knot (authoritative for $ZONE, RFC 2136 updates allowed with one TSIG key)
#   * Pebble (ACME test CA) validating DNS-01 against that Knot
#   * a second Pebble that requires External Account Binding (EAB)
# Writes DIR/env (shell syntax, KEY=value) and prints its path.
# Stop everything with stop-field.sh DIR. Every daemon also runs under
# `timeout FIELD_MAX_SECONDS` (default 1800) so a forgotten field dies by itself.
set -euo pipefail

dir=${1:?usage: start-field.sh DIR}
zone=${FIELD_ZONE:-box.test}
max_seconds=${FIELD_MAX_SECONDS:-1800}
# FIELD_KNOT_LISTEN: an extra address@port for Knot (a browser's resolver on a test LAN).
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

log() { printf 'start-field: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- packages (idempotent) ---------------------------------------------------
need=()
command -v pebble >/dev/null || need+=(pebble)
command -v knotd >/dev/null || [ -x /usr/sbin/knotd ] || need+=(knot)
command -v kdig >/dev/null || need+=(knot-dnsutils)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${need[@]}" >"$dir/apt.log" 2>&1; then
        $sudo apt-get update >>"$dir/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${need[@]}" >>"$dir/apt.log" 2>&1 \
            || die "apt-get install ${need[*]} failed, see $dir/apt.log"
    fi
fi
KNOTD=$(command -v knotd || echo /usr/sbin/knotd)
KNOTC=$(command -v knotc || echo /usr/sbin/knotc)

# --- free ports: all sockets are held at once, so the ports are distinct -----
read -r P_KNOT P_ACME P_MGMT P_VAHTTP P_VATLS P_EACME P_EMGMT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(7):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
# Knot also needs UDP on its port: make sure that one is free too.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.bind(("127.0.0.1", socks[0].getsockname()[1]))
except OSError:
    pass
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

# --- TLS for Pebble's own HTTPS listeners: throw-away CA + leaf -------------
mkdir -p "$dir/tls"
(
    cd "$dir/tls"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=field test CA for pebble listener" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out ca.pem 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out leaf.key.ec 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in leaf.key.ec -out leaf.key
    openssl req -new -key leaf.key -subj "/CN=localhost" -out leaf.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
        -extfile leaf.ext -out leaf.pem 2>/dev/null
)

# --- TSIG key + EAB MAC key -------------------------------------------------
tsig_name="boxapi-update."
tsig_alg="hmac-sha256"
tsig_secret=$(openssl rand -base64 32)
eab_kid="kid-1"
# Pebble decodes externalAccountMACKeys as base64url without padding.
eab_hmac=$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')

# --- Knot ---------------------------------------------------------------------
mkdir -p "$dir/knot/run" "$dir/knot/zones" "$dir/knot/db"
cat > "$dir/knot/zones/$zone.zone" <<EOF
\$ORIGIN $zone.
\$TTL 60
@   SOA ns.$zone. hostmaster.$zone. 1 3600 600 86400 60
@   NS  ns.$zone.
ns  A   127.0.0.1
EOF
cat > "$dir/knot/knot.conf" <<EOF
server:
    rundir: "$dir/knot/run"
    pidfile: "$dir/knot/run/knot.pid"
    listen: [ 127.0.0.1@$P_KNOT${FIELD_KNOT_LISTEN:+, $FIELD_KNOT_LISTEN} ]
control:
    listen: "$dir/knot/run/knot.sock"
database:
    storage: "$dir/knot/db"
log:
  - target: "$dir/knot/knot.log"
    any: info
key:
  - id: $tsig_name
    algorithm: $tsig_alg
    secret: $tsig_secret
acl:
  - id: acme_update
    key: $tsig_name
    action: update
template:
  - id: default
    storage: "$dir/knot/zones"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
zone:
  - domain: $zone
    acl: acme_update
EOF
"$KNOTC" -c "$dir/knot/knot.conf" conf-check >/dev/null 2>&1 || die "knot config invalid: $("$KNOTC" -c "$dir/knot/knot.conf" conf-check 2>&1)"

# --- Pebble configs -----------------------------------------------------------
pebble_conf() { # listen mgmt eab(true|false)
    cat <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:$1",
    "managementListenAddress": "127.0.0.1:$2",
    "certificate": "$dir/tls/leaf.pem",
    "privateKey": "$dir/tls/leaf.key",
    "httpPort": $P_VAHTTP,
    "tlsPort": $P_VATLS,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": $3$( [ "$3" = true ] && printf ',\n    "externalAccountMACKeys": { "%s": "%s" }' "$eab_kid" "$eab_hmac")
  }
}
EOF
}
mkdir -p "$dir/pebble"
pebble_conf "$P_ACME" "$P_MGMT" false > "$dir/pebble/pebble.json"
pebble_conf "$P_EACME" "$P_EMGMT" true > "$dir/pebble/pebble-eab.json"

# --- start --------------------------------------------------------------------
start_bg() { # logfile cmd...  -> prints pid
    local logf=$1; shift
    timeout --signal=TERM "$max_seconds" "$@" </dev/null >"$logf" 2>&1 &
    echo $!
}
pids=()
cleanup_on_error() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    fi
}
trap cleanup_on_error EXIT

knot_pid=$(start_bg "$dir/knot/knotd.out" "$KNOTD" -c "$dir/knot/knot.conf"); pids+=("$knot_pid")
export PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0
pebble_pid=$(start_bg "$dir/pebble/pebble.log" pebble -config "$dir/pebble/pebble.json" -dnsserver "127.0.0.1:$P_KNOT"); pids+=("$pebble_pid")
pebble_eab_pid=$(start_bg "$dir/pebble/pebble-eab.log" pebble -config "$dir/pebble/pebble-eab.json" -dnsserver "127.0.0.1:$P_KNOT"); pids+=("$pebble_eab_pid")

# --- wait until ready (bounded) ----------------------------------------------
ready=0
for _ in $(seq 1 100); do
    ok=1
    kdig +timeout=1 +retry=0 @127.0.0.1 -p "$P_KNOT" "$zone." SOA +short 2>/dev/null | grep -q . || ok=0
    for port in "$P_ACME" "$P_EACME"; do
        curl -fsS --max-time 2 --cacert "$dir/tls/ca.pem" "https://127.0.0.1:$port/dir" >/dev/null 2>&1 || ok=0
    done
    for port in "$P_MGMT" "$P_EMGMT"; do
        curl -fsS --max-time 2 --cacert "$dir/tls/ca.pem" "https://127.0.0.1:$port/roots/0" >/dev/null 2>&1 || ok=0
    done
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || die "a daemon exited early (pid $p); logs in $dir/knot and $dir/pebble"; done
    if [ $ok = 1 ]; then ready=1; break; fi
    sleep 0.1
done
[ $ready = 1 ] || die "field not ready after 10 s; logs in $dir/knot and $dir/pebble"

cat > "$dir/env" <<EOF
FIELD_DIR=$dir
ACME_DIRECTORY=https://127.0.0.1:$P_ACME/dir
ACME_EAB_DIRECTORY=https://127.0.0.1:$P_EACME/dir
PEBBLE_LISTENER_CA=$dir/tls/ca.pem
PEBBLE_MGMT=https://127.0.0.1:$P_MGMT
PEBBLE_EAB_MGMT=https://127.0.0.1:$P_EMGMT
EAB_KID=$eab_kid
EAB_HMAC_B64URL=$eab_hmac
KNOT_ADDR=127.0.0.1:$P_KNOT
KNOT_PORT=$P_KNOT
KNOT_CONF=$dir/knot/knot.conf
KNOT_SOCKET=$dir/knot/run/knot.sock
ZONE=$zone
TSIG_NAME=$tsig_name
TSIG_ALG=$tsig_alg
TSIG_SECRET=$tsig_secret
KNOT_PID=$knot_pid
PEBBLE_PID=$pebble_pid
PEBBLE_EAB_PID=$pebble_eab_pid
PIDS="${pids[*]}"
EOF
trap - EXIT
echo "$dir/env"
