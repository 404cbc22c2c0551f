"""Real responses of the live daemon validated against docs/openapi.yaml (JSON Schema 2020-12)."""
import json
import sys
import time

import jsonschema
import requests
import yaml

spec_path, base, ca, token = sys.argv[1:5]
spec = yaml.safe_load(open(spec_path))


def schema(name):
    return {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}


def check(name, method, path, schema_name, status, headers=None):
    r = requests.request(method, base + path, headers=headers or {}, verify=ca, timeout=10)
    assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
    documented = spec["paths"][path.split("?")[0]][method.lower()]["responses"]
    assert str(status) in documented, f"{name}: {status} is not documented for {method} {path}"
    jsonschema.validate(r.json(), schema(schema_name), cls=jsonschema.Draft202012Validator)
    assert r.headers["Cache-Control"] == "no-store"
    print(f"ok   {name}")


auth = {"Authorization": f"Bearer {token}"}
check("card", "GET", "/v1/access", "Card", 200, auth)
check("counters", "GET", "/v1/counters", "CountersSnapshot", 200, auth)
check("missing token problem", "GET", "/v1/access", "Problem", 401)
check("invalid token problem", "GET", "/v1/counters", "Problem", 401, {"Authorization": "Bearer x.y.z"})
check("origin problem", "GET", "/v1/access", "Problem", 403, {**auth, "Origin": "https://evil.example"})
check("discovery", "GET", "/.well-known/oauth-authorization-server", "Discovery", 200)
check("host problem", "GET", "/v1/access", "Problem", 421, {**auth, "Host": "evil.example"})


def check_stream():
    """A few NDJSON lines of the counters stream, each a CountersSnapshot; then the 400 and 429."""
    url = base + "/v1/counters/stream?interval_ms=100"
    with requests.get(url, headers=auth, verify=ca, timeout=10, stream=True) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "application/x-ndjson", r.headers
        assert r.headers["Cache-Control"] == "no-store"
        assert "200" in spec["paths"]["/v1/counters/stream"]["get"]["responses"]
        second = requests.get(url, headers=auth, verify=ca, timeout=10)
        assert second.status_code == 429, second.text
        jsonschema.validate(second.json(), schema("Problem"), cls=jsonschema.Draft202012Validator)
        # Contract §6 rev. 3: told apart from the request rate limit, with the time the open one has left.
        assert second.json().get("reason") == "stream_open", second.text
        assert 0 < int(second.headers["Retry-After"]) <= 120, second.headers
        lines = []
        for line in r.iter_lines():
            lines.append(json.loads(line))
            if len(lines) == 3:
                break
    for line in lines:
        jsonschema.validate(line, schema("CountersSnapshot"), cls=jsonschema.Draft202012Validator)
    assert lines[0]["monotonic_us"] < lines[2]["monotonic_us"]
    print("ok   counters stream (3 lines, and a second stream refused)")


# The first stream is closed above; the box notices at its next write (100 ms).
check_stream()
time.sleep(0.5)
check("bad stream interval", "GET", "/v1/counters/stream?interval_ms=5", "Problem", 400, auth)
# And a schema that must fail on a broken card, so the check above is not vacuous.
try:
    jsonschema.validate({"api_version": "1.0"}, schema("Card"), cls=jsonschema.Draft202012Validator)
    sys.exit("the Card schema accepted an incomplete card")
except jsonschema.ValidationError:
    print("ok   the Card schema rejects an incomplete card")
