#!/bin/sh
# Makes a development CA and a server certificate (ECDSA P-256) for boxapi, with openssl.
# Never commit what it writes: the private keys are for development and tests only.
#
#   certs/make-dev-certs.sh OUT_DIR [SAN ...]
#
# SANs default to DNS:localhost DNS:box.test IP:127.0.0.1 IP:::1; pass others to replace them
# (e.g. DNS:box.isp.example IP:192.168.1.1). Writes OUT_DIR/ca.pem, ca.key, server.pem, server.key.
# An existing OUT_DIR/ca.pem + ca.key is reused (to issue a replacement server certificate).
# Environment: DAYS (server certificate lifetime, default 365).
set -eu
out=${1:?usage: make-dev-certs.sh OUT_DIR [SAN ...]}
shift
[ $# -gt 0 ] || set -- DNS:localhost DNS:box.test IP:127.0.0.1 IP:::1
san=$(printf '%s,' "$@"); san=${san%,}
days=${DAYS:-365}
mkdir -p "$out"
umask 077
cd "$out"
if [ ! -s ca.pem ] || [ ! -s ca.key ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=boxapi development CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out ca.pem 2>/dev/null
fi
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key 2>/dev/null
openssl req -new -key server.key -subj "/CN=boxapi" -out server.csr 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days "$days" \
    -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.pem server.pem
echo "$out: ca.pem ca.key server.pem server.key ($san, $days days)"
