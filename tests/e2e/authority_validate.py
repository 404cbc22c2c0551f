"""Named answers of a live boxapi-authority, each checked against docs/authority-openapi.yaml: the
status is documented for its operation, the body matches the schema documented for that status
and content type, and the expected `error` / `code` is the one given (tests/e2e/authority.sh).
Usage: authority_validate.py SPEC BASE CA WORK BOXAPI ISSUER"""
import base64
import json
import subprocess
import sys
from urllib.parse import parse_qs

import jsonschema
import requests
import yaml

spec_path, base, ca, work, boxapi, issuer = sys.argv[1:7]
spec = yaml.safe_load(open(spec_path))
assertions = {t: open(f"{work}/{t}.assertions").read().split() for t in ("demo", "narrow")}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def deref(node):
    if isinstance(node, dict) and "$ref" in node:
        target = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return deref(target)
    return node


class FromUnmapped(requests.adapters.HTTPAdapter):
    """Connections from 127.0.0.2: an address the locator maps to no box."""

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = ("127.0.0.2", 0)
        super().init_poolmanager(*args, **kwargs)


unmapped = requests.Session()
unmapped.mount("https://", FromUnmapped())


def check(name, method, path, status, want=None, session=requests, **kw):
    r = session.request(method, base + path, verify=ca, timeout=10, **kw)
    assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
    operations = spec["paths"][path]
    # A method the path does not answer: the document's 405.
    documented = operations[method.lower()]["responses"] if method.lower() in operations \
        else {"405": spec["components"]["responses"]["MethodNotAllowed"]}
    assert str(status) in documented, f"{name}: {status} is not documented for {method} {path}"
    response = deref(documented[str(status)])
    assert r.headers["Cache-Control"] == "no-store", name
    assert r.headers["X-Content-Type-Options"] == "nosniff", name
    for header in response.get("headers", {}):
        assert header in r.headers, f"{name}: no {header} header"
    body = None
    if r.content:
        kind = r.headers["Content-Type"].split(";")[0]
        assert kind in response.get("content", {}), f"{name}: {kind} is not documented for {status}"
        body = r.json()
        schema = {**response["content"][kind]["schema"], "components": spec["components"]}
        jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
        if want is not None:
            assert want in (body.get("error"), body.get("code")), f"{name}: {body}"
    print(f"ok   {name}")
    return r, body


def token_form(tool, index, **extra):
    form = {k: v[0] for k, v in parse_qs(assertions[tool][index]).items()}
    form.update(extra)
    return form


def claims(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


discovery = check("discovery", "GET", "/.well-known/oauth-authorization-server", 200)[1]
assert discovery["token_endpoint"] == issuer + "/v1/token", discovery
_, granted = check("token for a fresh assertion", "POST", "/v1/token", 200, headers=FORM,
                   data=token_form("demo", 0, scope="counters"))
assert granted["scope"] == "counters" and granted["box_url"] == "https://b1.box.test", granted
# per_box_audience: the token is for the caller's own box only.
assert claims(granted["access_token"])["aud"] == "https://b1.box.test", granted
check("the same assertion again", "POST", "/v1/token", 401, "invalid_client", headers=FORM,
      data=token_form("demo", 0))
check("a scope beyond the registration", "POST", "/v1/token", 400, "invalid_scope", headers=FORM,
      data=token_form("narrow", 0, scope="access counters"))
check("another grant type", "POST", "/v1/token", 400, "unsupported_grant_type", headers=FORM,
      data=token_form("demo", 1, grant_type="password"))
check("not a form", "POST", "/v1/token", 400, "invalid_request", json={"grant_type": "client_credentials"})
check("a foreign page", "POST", "/v1/token", 403, "origin_not_allowed",
      headers={**FORM, "Origin": "https://evil.example"}, data=token_form("demo", 2))
check("another tool's page", "POST", "/v1/token", 401, "invalid_client",
      headers={**FORM, "Origin": "https://narrow.example"}, data=token_form("demo", 3))
check("GET on the token endpoint", "GET", "/v1/token", 405, "method_not_allowed")
check("preflight of the tool's page", "OPTIONS", "/v1/token", 204,
      headers={"Origin": "https://demo.example", "Access-Control-Request-Method": "POST"})
check("the caller's box", "GET", "/v1/locate", 200)
check("no box for this address", "GET", "/v1/locate", 404, "box_not_found", session=unmapped)
check("a token from an address without a box", "POST", "/v1/token", 400, "invalid_target",
      session=unmapped, headers=FORM, data=token_form("demo", 4))

subprocess.run([boxapi, "ctl", "--socket", f"{work}/control.sock", "suspend", "--retry-after", "120"],
               check=True, stdout=subprocess.DEVNULL)
try:
    r, _ = check("discovery while suspended", "GET", "/.well-known/oauth-authorization-server", 503, "suspended")
    assert r.headers["Retry-After"] == "120", r.headers
    check("a token while suspended", "POST", "/v1/token", 503, "suspended", headers=FORM,
          data=token_form("demo", 5))
finally:
    subprocess.run([boxapi, "ctl", "--socket", f"{work}/control.sock", "resume"], check=True,
                   stdout=subprocess.DEVNULL)

# The schemas must be able to fail, so that the checks above are not vacuous.
for name, value in [("TokenResponse", {"access_token": "x"}), ("OAuthError", {"error": "nope"}),
                    ("Discovery", {"issuer": "x"})]:
    try:
        jsonschema.validate(value, {"$ref": f"#/components/schemas/{name}", "components": spec["components"]},
                            cls=jsonschema.Draft202012Validator)
        sys.exit(f"the {name} schema accepted {value}")
    except jsonschema.ValidationError:
        pass
print("ok   the schemas reject incomplete answers")
