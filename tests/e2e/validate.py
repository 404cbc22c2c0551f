"""Real responses of the live daemon validated against docs/openapi.yaml (JSON Schema 2020-12)."""
import sys

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
    documented = spec["paths"][path][method.lower()]["responses"]
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
# And a schema that must fail on a broken card, so the check above is not vacuous.
try:
    jsonschema.validate({"api_version": "1.0"}, schema("Card"), cls=jsonschema.Draft202012Validator)
    sys.exit("the Card schema accepted an incomplete card")
except jsonschema.ValidationError:
    print("ok   the Card schema rejects an incomplete card")
