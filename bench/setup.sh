# Sourced by bench/run.sh, bench/profile.sh, bench/fleet.sh (its nginx functions) and bench/tokens.sh
# (authority_conf_tail). bench_setup:
# in $work, a test CA and server certificate, the bench tool's key, boxapi.toml (bench/bench.toml)
# listening on port $1, and a token in $token. Needs $BOX (the boxapi binary) and $work.
bench_setup() {
    local port=$1
    ./certs/make-dev-certs.sh "$work" >/dev/null
    "$BOX" keygen --alg ES256 --kid bench --out "$work" >/dev/null
    sed -e "s/@PORT@/$port/" bench/bench.toml > "$work/boxapi.toml"
    token=$("$BOX" token --key "$work/bench.private.jwk" --tool bench --scope "access counters" \
        --aud https://box.test --iss https://auth.test)
}

# nginx_site FILE PATH: $work/nginx (its own logs and temporary files) serving FILE at PATH.
nginx_site() {
    mkdir -p "$work/nginx/www$(dirname "$2")" "$work/nginx/tmp"
    cp "$1" "$work/nginx/www$2"
    chmod -R a+rX "$work/nginx/www" && chmod a+x "$work" "$work/nginx"   # nginx's worker is not root
}

# nginx_conf_head: the start of that nginx's nginx.conf (one worker, in the foreground, up to
# inside `http {`); the caller adds its server block and closes `http`.
nginx_conf_head() {
    cat <<CONF
worker_processes 1;
daemon off;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log $work/nginx/access.log;   # the server it is compared with logs every request too
    client_body_temp_path $work/nginx/tmp; proxy_temp_path $work/nginx/tmp;
    fastcgi_temp_path $work/nginx/tmp; uwsgi_temp_path $work/nginx/tmp; scgi_temp_path $work/nginx/tmp;
CONF
}

# authority_conf_tail SIGNING_KEY: the end of an authority's [server] and its [auth] and
# [token_endpoint], the benchmarks' audience and issuer.
authority_conf_tail() {
    cat <<CONF
max_connections = 256
[auth]
audience = "https://box.bench"
issuers = ["https://authority.bench"]
[token_endpoint]
enabled = true
issuer = "https://authority.bench"
signing_key = "$1"
CONF
}
