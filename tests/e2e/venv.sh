# Sourced by tests/e2e/run.sh and tests/e2e/authority.sh: $venv, a Python venv with schemathesis,
# jsonschema, PyYAML and requests (PyPI), made once and kept in the user's cache.
venv=${BOXAPI_E2E_VENV:-$HOME/.cache/boxapi-e2e-venv}
[ -x "$venv/bin/schemathesis" ] && "$venv/bin/python" -c "import jsonschema, yaml, requests" 2>/dev/null ||
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis jsonschema pyyaml requests; }
