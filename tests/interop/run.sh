#!/usr/bin/env bash
# Interoperability: a token issued by oidc-provider is accepted by boxapi through issuer_keys;
# revoking the tool on the box refuses it at once.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
[ -d node_modules/oidc-provider ] || npm install --no-audit --no-fund >/dev/null
(cd "$root" && cargo build --locked -q)
BOX=$root/target/debug/boxapi
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
"$root/certs/make-dev-certs.sh" "$work" >/dev/null
"$BOX" keygen --alg ES256 --kid oidc-issuer --out "$work" >/dev/null
"$BOX" keygen --alg ES256 --kid demo-tool --out "$work" >/dev/null
# The box trusts the provider's public key as an issuer key (a JWKS).
printf '{"keys":[%s]}' "$(cat "$work/oidc-issuer.jwk")" > "$work/issuer.jwks"
port=18543
cat > "$work/boxapi.toml" <<CONF
[server]
listen = ["127.0.0.1:$port"]
server_names = ["localhost"]
cert = "server.pem"
key = "server.key"
state_dir = "state"
control_socket = "control.sock"
[auth]
audience = "https://boxapi.demo"
issuers = ["http://127.0.0.1:3000"]
issuer_keys = "issuer.jwks"
[[tool]]
id = "demo"
origins = ["https://demo.example"]
scopes = ["access", "counters"]
CONF
"$BOX" serve --config "$work/boxapi.toml" 2>"$work/log" & pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
token=$(ISSUER_KEY=$work/oidc-issuer.private.jwk TOOL_KEY=$work/demo-tool.private.jwk AUDIENCE=https://boxapi.demo \
    TOOL_ID=demo PORT=3000 node interop.mjs | tail -1)
code() { curl -s -o "$work/body" -w '%{http_code}' --cacert "$work/ca.pem" -H "Authorization: Bearer $token" "https://localhost:$port/v1/access"; }
echo "token: ${token:0:60}… ($(wc -l <<<"$token") lines)"

first=$(code); cat "$work/body"; echo
echo "boxapi answers the oidc-provider token: $first"
"$BOX" ctl --socket "$work/control.sock" revoke demo >/dev/null
second=$(code)
echo "after ctl revoke demo: $second"
[ "$first" = 200 ] && [ "$second" = 401 ]
