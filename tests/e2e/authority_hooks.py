"""schemathesis hooks for docs/authority-openapi.yaml (tests/e2e/authority.sh): each well-formed
token request schemathesis generates is sent with a fresh client assertion of the tool `demo`
(assertions are single use: one per request), so the token path answers 200, not only refusals.
Requests generated to be malformed are sent as generated. ASSERTIONS names a file of token
request bodies (tests/interop/bench-assertions.mjs); the first SKIP are left to other checks."""
import os
import sys
from urllib.parse import parse_qs, urlencode

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



# The authority reads a token request's body up to 16 KiB; past it, it answers 400 and closes the
# connection at once, so a client still sending sees a reset rather than the answer
# (docs/authority-openapi.yaml says so). schemathesis cannot take a reset for an answer: bodies
# are kept within the documented 16 KiB (counted as sent, percent-encoded).
MAX_BODY = 16 * 1024


@schemathesis.hook
def filter_body(ctx, body):
    if ctx.operation is None or ctx.operation.path != "/v1/token":
        return True
    sent = urlencode(body, doseq=True) if isinstance(body, dict) else str(body)
    return len(sent.encode()) <= MAX_BODY


@schemathesis.hook
def after_network_error(ctx, case, request):
    """Names the request in the output when no answer came (schemathesis does not)."""
    body = request.body or b""
    print(f"network error: {request.method} {request.url} {dict(request.headers)} body of {len(body)} bytes",
          file=sys.stderr)
