# Sourced by bench/run.sh and bench/profile.sh: in $work, a test CA and server certificate, the
# bench tool's key, boxapi.toml (bench/bench.toml) listening on port $1, and a token in $token.
# Needs $BOX (the boxapi binary) and $work.
bench_setup() {
    local port=$1
    ./certs/make-dev-certs.sh "$work" >/dev/null
    "$BOX" keygen --alg ES256 --kid bench --out "$work" >/dev/null
    sed -e "s/@PORT@/$port/" bench/bench.toml > "$work/boxapi.toml"
    token=$("$BOX" token --key "$work/bench.private.jwk" --tool bench --scope "access counters" \
        --aud https://box.test --iss https://auth.test)
}
