#!/bin/sh
# Makes a measurement tool's signing key with openssl (independently of boxapi's own keygen):
# OUT_DIR/NAME.pem (PKCS#8 private key) and OUT_DIR/NAME.pub.der (SubjectPublicKeyInfo).
#
#   certs/make-tool-key.sh OUT_DIR NAME ES256|EdDSA
set -eu
out=${1:?usage: make-tool-key.sh OUT_DIR NAME ES256|EdDSA}
name=${2:?name}
case ${3:?alg} in
    ES256) set -- -algorithm EC -pkeyopt ec_paramgen_curve:P-256 ;;
    EdDSA) set -- -algorithm ed25519 ;;
    *) echo "alg must be ES256 or EdDSA" >&2; exit 64 ;;
esac
mkdir -p "$out"
umask 077
openssl genpkey "$@" -out "$out/$name.pem" 2>/dev/null
openssl pkey -in "$out/$name.pem" -pubout -outform DER -out "$out/$name.pub.der" 2>/dev/null
