#!/usr/bin/env bash
# tests/field/browser.sh — the field in a browser (contract §10), run by `make test-e2e` as root:
# Knot, Pebble and the operator's authority; a box on a LAN interface that enrols and serves its
# own name; the example tool page; and Chromium in a network namespace on the box's LAN, whose
# resolver is Knot and whose only trust anchor is Pebble's root.
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
root=$(cd ../.. && pwd)
OUT=${OUT:-$root/tests/out}
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "tests/field/browser.sh: needs root (network namespace, port 443)" >&2; exit 1; }
missing=""
for p in chromium libnss3-tools curl openssl; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
(cd "$root" && cargo build --workspace --locked -q)
BOX=$root/target/debug/boxapi
AUTH=$root/target/debug/boxapi-authority
[ -d "$root/tests/e2e/node_modules/playwright-core" ] || (cd "$root/tests/e2e" && npm install --no-audit --no-fund >/dev/null)

id=$(( $$ % 200 + 20 ))
ns=bxbr$id; host_if=bxr$id; lan=10.79.$id
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "$here/stop-field.sh" "$work/field" >/dev/null 2>&1 || true
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$host_if" 2>/dev/null || true
    rm -rf "/etc/netns/$ns" "$work"
}
trap cleanup EXIT

# The LAN: the box's side in this namespace (where the box, Knot and the tool server listen),
# the browser's side in its own namespace, resolving through Knot.
ip netns add "$ns"
ip link add "$host_if" type veth peer name eth0 netns "$ns"
ip addr add "$lan.1/24" dev "$host_if"
ip link set "$host_if" up
ip -n "$ns" addr add "$lan.2/24" dev eth0
ip -n "$ns" link set eth0 up
ip -n "$ns" link set lo up
mkdir -p "/etc/netns/$ns"
echo "nameserver $lan.1" > "/etc/netns/$ns/resolv.conf"

FIELD_KNOT_LISTEN="$lan.1@53" "$here/start-field.sh" "$work/field" >/dev/null
# shellcheck disable=SC1091
. "$work/field/env"
zone=${ZONE%.}
"$here/make-pki.sh" "$work" >/dev/null
printf '%s' "$TSIG_SECRET" > "$work/tsig.key"
"$BOX" keygen --alg ES256 --kid signer --out "$work" >/dev/null
"$BOX" keygen --alg ES256 --kid demo --out "$work" >/dev/null

# The authority's port is chosen now: its token endpoint's URL is the `aud` of the tool's assertions.
auth_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/authority.toml" <<CONF
[server]
cert = "auth.pem"
key = "auth.key"
state_dir = "authority-state"
control_socket = "authority.sock"
[auth]
audience = "https://boxapi.demo"
issuers = ["https://127.0.0.1:$auth_port"]
[token_endpoint]
enabled = true
issuer = "https://127.0.0.1:$auth_port"
signing_key = "signer.private.jwk"
[authority]
listen = ["127.0.0.1:$auth_port"]
[enrolment]
device_ca = "device-ca.pem"
zone = "$zone"
[acme]
directory = "$ACME_DIRECTORY"
account = "acme-account.json"
ca = "$PEBBLE_LISTENER_CA"
[dns]
server = "$KNOT_ADDR"
tsig_name = "$TSIG_NAME"
tsig_algorithm = "$TSIG_ALG"
tsig_secret_file = "tsig.key"
[[tool]]
id = "demo"
origins = ["https://tool.test:8443"]
scopes = ["access", "counters"]
keys = ["demo.jwk"]
CONF
printf '{"keys":[%s]}' "$(cat "$work/signer.jwk")" > "$work/signer.jwks"
"$AUTH" serve --config "$work/authority.toml" 2>"$OUT/field-authority.log" & pids+=($!)
auth_addr=""
for _ in $(seq 100); do
    auth_addr=$(grep '"event":"listening"' "$OUT/field-authority.log" | sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' | head -n 1 || true)
    [ -n "$auth_addr" ] && break
    sleep 0.1
done
[ -n "$auth_addr" ] || { echo "authority did not start:"; cat "$OUT/field-authority.log"; exit 1; }

cat > "$work/boxapi.toml" <<CONF
[server]
listen_interfaces = ["$host_if"]
port = 443
cert = "cert.pem"
key = "key.pem"
state_dir = "box-state"
control_socket = "box.sock"
[auth]
audience = "https://boxapi.demo"
issuers = ["https://$auth_addr"]
issuer_keys = "signer.jwks"
central_token_endpoint = "https://$auth_addr/v1/token"
[[tool]]
id = "demo"
origins = ["https://tool.test:8443"]
scopes = ["access", "counters"]
keys = ["demo.jwk"]
[enrol]
authority = "https://$auth_addr"
authority_ca = "op-ca.pem"
device_cert = "device.pem"
device_key = "device.key"
zone = "$zone"
[metrics]
wan_interface = "lo"
[metrics.static]
box = { model = "Field Box", firmware_version = "1.0" }
subscription = { down_kbps = 1000000, up_kbps = 500000 }
access = { technology = "ftth", down_kbps = 1244000, up_kbps = 1244000 }
CONF
name=$("$BOX" enrol --config "$work/boxapi.toml" | cut -d: -f1)
echo "box enrolled as $name"
"$BOX" serve --config "$work/boxapi.toml" 2>"$OUT/field-box.log" & pids+=($!)
for _ in $(seq 100); do grep -q '"event":"listening"' "$OUT/field-box.log" && break; sleep 0.1; done

# The tool's page is served over HTTPS under a public-looking name, with a certificate from the
# same stand-in public CA (signed here with Pebble's intermediate, which its management
# interface hands out: the tool's own certificate is not what this test is about).
curl -sf --cacert "$PEBBLE_LISTENER_CA" "$PEBBLE_MGMT/roots/0" > "$work/pebble-root.pem"
curl -sf --cacert "$PEBBLE_LISTENER_CA" "$PEBBLE_MGMT/intermediates/0" > "$work/pebble-int.pem"
curl -sf --cacert "$PEBBLE_LISTENER_CA" "$PEBBLE_MGMT/intermediate-keys/0" > "$work/pebble-int.key"
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$work/tool.key"
openssl req -new -key "$work/tool.key" -subj "/CN=tool.test" -out "$work/tool.csr" 2>/dev/null
printf 'subjectAltName=DNS:tool.test\nextendedKeyUsage=serverAuth\n' > "$work/tool.ext"
openssl x509 -req -in "$work/tool.csr" -CA "$work/pebble-int.pem" -CAkey "$work/pebble-int.key" \
    -CAcreateserial -days 1 -sha256 -extfile "$work/tool.ext" -out "$work/tool.pem" 2>/dev/null
cat "$work/pebble-int.pem" >> "$work/tool.pem"
# Central mode: the tool's backend gets the page's tokens from the authority (which it trusts
# through the operator's test CA).
BOX_URL=https://$name TOOL_ID=demo TOOL_KEY=$work/demo.private.jwk HOST=$lan.1 PORT=8443 \
    AUTHORITIES=https://$auth_addr NODE_EXTRA_CA_CERTS=$work/op-ca.pem \
    TLS_CERT=$work/tool.pem TLS_KEY=$work/tool.key \
    node "$root/examples/speedtest/server.mjs" >"$OUT/field-tool.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/$lan.1/8443") 2>/dev/null && break; sleep 0.1; done

# The browser's profile trusts Pebble's root and nothing else added.
home=$work/home
mkdir -p "$home/.pki/nssdb"
certutil -d sql:"$home/.pki/nssdb" -N --empty-password
certutil -d sql:"$home/.pki/nssdb" -A -t "C,," -n pebble-root -i "$work/pebble-root.pem"
ip netns exec "$ns" env HOME="$home" BOX_NAME="$name" TOOL_IP="$lan.1" OUT="$OUT" \
    node "$root/tests/e2e/field.mjs"
