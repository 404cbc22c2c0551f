#!/usr/bin/env bash
# make-pki.sh DIR — the operator's PKI for a field test, made by openssl:
#   op-ca.pem                   CA of the authority's own TLS certificate (what boxes trust for it)
#   auth.pem auth.key           the authority's TLS certificate (localhost, 127.0.0.1)
#   device-ca.pem device-ca.key the device CA (identities provisioned at manufacture)
#   device.pem device.key       one box's device certificate (TLS client, clientAuth)
#   device-ca.crl               the device CA's CRL, revoking revoked.pem; device-ca.cnf,
#                               index.txt and crlnumber let `openssl ca -config device-ca.cnf` revoke more
#   revoked expired stranger    .pem/.key: device certificates the authority refuses (revoked in
#                               that CRL; expired a day ago; from other-ca.pem, an unrelated CA)
# Nothing here is a public root: browsers in the tests trust Pebble's root only.
set -euo pipefail
dir=${1:?usage: make-pki.sh DIR}
mkdir -p "$dir"
cd "$dir"
key() { openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$1"; }
ca() { # name cn
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -sha256 -days 2 -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$1.pem" 2>/dev/null
}
leaf() { # name cn issuer extensions [days: negative for an expired one]
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
    printf '%b' "$4" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days "${5:-2}" -sha256 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
ca op-ca "operator test CA"
leaf auth authority op-ca 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'
ca device-ca "device test CA"
dev='extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n'
leaf device "device 0001" device-ca "$dev"
leaf revoked "device 0002" device-ca "$dev"
leaf expired "device 0003" device-ca "$dev" -1
ca other-ca "another CA"
leaf stranger "device 0004" other-ca "$dev"
printf '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ncertificate = device-ca.pem\nprivate_key = device-ca.key\ndefault_md = sha256\ndefault_crl_days = 30\n' > device-ca.cnf
: > index.txt
echo 01 > crlnumber
openssl ca -config device-ca.cnf -revoke revoked.pem 2>/dev/null
openssl ca -config device-ca.cnf -gencrl -out device-ca.crl 2>/dev/null
