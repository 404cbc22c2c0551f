// The typed errors a tool tells apart, and how the box's problems (RFC 9457, `code` + `reason`,
// contract §6) and the token endpoints' OAuth errors (RFC 6749 §5.2, `error` +
// `error_description`) map onto them. Shared by the browser and Node parts.

/** Every refusal or failure this library reports. */
export class BoxApiError extends Error {
  constructor(message, { status = 0, code = "", reason = "", detail = "", body = null, url = "", cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.reason = reason;
    this.detail = detail;
    this.body = body;
    this.url = url;
  }
}

/**
 * The browser stopped the request and told the page nothing (a `TypeError` from fetch). The page
 * cannot read why; `diagnosis` is the library's best inference from what it can observe.
 */
export class BlockedByBrowser extends BoxApiError {}

/** The operator registered the tool for another period (`not_before`/`expires`) or revoked it: a new token will not help. */
export class ToolNotValid extends BoxApiError {}

/** A scope the tool is not registered for (API: 403 `insufficient_scope`; token endpoint: 400 `invalid_scope`). */
export class ScopeError extends BoxApiError {}

/** Try again after `seconds` (suspended box or authority, rate limit, stream already open, quota). */
export class RetryAfter extends BoxApiError {}

/** Anything else the box, the authority or the tool's backend refused. */
export class Refused extends BoxApiError {}

/**
 * The box's discovery has `token_endpoint: null`: it is configured for neither mode (no
 * `[token_endpoint]`, no `[auth] central_token_endpoint`), so no tool can get a token for it.
 */
export class NoTokenEndpoint extends Refused {
  constructor(url = "") {
    super(
      `this box announces no token endpoint (its discovery's token_endpoint is null${url ? `: ${url}` : ""}): ` +
        "its configuration names neither [token_endpoint] (box mode) nor [auth] central_token_endpoint (central mode)",
      { status: 400, code: "no_token_endpoint", url },
    );
  }
}

/** `Retry-After` in seconds (delta-seconds; an HTTP date is turned into a delay), or `fallback`. */
export function retryAfterSeconds(headers, fallback = 1) {
  const raw = headers?.get?.("retry-after");
  if (raw == null || raw === "") return fallback;
  if (/^\d+$/.test(raw.trim())) return Number(raw.trim());
  const at = Date.parse(raw);
  return Number.isNaN(at) ? fallback : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/**
 * The typed error for a refused answer: `body` is a problem (`code`, `reason`, `detail`), an
 * OAuth error (`error`, `error_description`) or anything else (then only the status counts).
 */
export function errorFor(status, body, headers, url = "") {
  const b = body && typeof body === "object" ? body : {};
  const oauth = typeof b.error === "string" && b.code === undefined;
  const code = oauth ? b.error : typeof b.code === "string" ? b.code : `http_${status}`;
  const reason = typeof b.reason === "string" ? b.reason : oauth ? oauthReason(code, b.error_description) : "";
  const detail = String((oauth ? b.error_description : b.detail) ?? "");
  const init = { status, code, reason, detail, body: b, url };
  const text = `${status} ${code}${reason ? ` (${reason})` : ""}${detail ? `: ${detail}` : ""}`;
  if (reason === "tool_not_valid" || reason === "tool_revoked") {
    const e = new ToolNotValid(text, init);
    e.revoked = reason === "tool_revoked";
    e.notBefore = b.not_before ?? null;
    e.expires = b.expires ?? null;
    return e;
  }
  if (code === "insufficient_scope" || code === "invalid_scope") return new ScopeError(text, init);
  if (status === 429 || status === 503) {
    const e = new RetryAfter(text, init);
    e.seconds = retryAfterSeconds(headers, status === 503 ? 30 : 1);
    return e;
  }
  return new Refused(text, init);
}

/**
 * Token endpoints answer in OAuth's shape, which has no `reason`: an `invalid_client` for a lapsed
 * or revoked tool carries the box's and the authority's fixed words for it (the same as the API's
 * 401 detail), recognised here once, and tested against the real daemons (test/daemons.test.js),
 * so that no tool has to match text.
 */
function oauthReason(error, description) {
  if (error !== "invalid_client" || typeof description !== "string") return "";
  if (description.includes("this tool's authorisation") && description.includes("not valid now")) return "tool_not_valid";
  if (description.includes("this tool's access has been revoked")) return "tool_revoked";
  return "";
}

/** Reads a refused `Response` (JSON or not) into its typed error. */
export async function errorFromResponse(resp, url = resp.url) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // Not JSON (a proxy's page, an empty body): the status alone says what happened.
  }
  return errorFor(resp.status, body, resp.headers, url);
}
