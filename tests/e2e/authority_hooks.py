"""schemathesis hooks for docs/authority-openapi.yaml (tests/e2e/authority.sh): each well-formed
token request schemathesis generates is sent with a fresh client assertion of the tool `demo`
(assertions are single use: one per request), so the token path answers 200, not only refusals.
Requests generated to be malformed are sent as generated. ASSERTIONS names a file of token
request bodies (tests/interop/bench-assertions.mjs); the first SKIP are left to other checks."""
import os
from urllib.parse import parse_qs

import schemathesis

_lines = open(os.environ["ASSERTIONS"]).read().split()[int(os.environ.get("SKIP", "0")):]
_fresh = (parse_qs(line)["client_assertion"][0] for line in _lines)


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.operation.path != "/v1/token" or case.method.upper() != "POST":
        return
    meta = case.meta
    positive = meta is not None and meta.generation.mode.is_positive
    headers = {k.lower() for k in (case.headers or {})}
    if not positive or not isinstance(case.body, dict) or "authorization" in headers:
        return
    case.body["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    case.body["client_assertion"] = next(_fresh)
    if "client_id" in case.body:
        case.body["client_id"] = "demo"
