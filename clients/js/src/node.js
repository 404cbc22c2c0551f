// boxapi-client/node, the tool backend's part: client assertions (RFC 7523) signed with the tool's
// private JWK, central tokens from an allow-listed authority, and the one route a page's
// `connect({ backend })` calls. node:crypto only, no dependency.
import { createPrivateKey, randomBytes, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { BoxApiError, NoTokenEndpoint, Refused, RetryAfter, errorFromResponse } from "./errors.js";
import { ASSERTION_TYPE } from "./index.js";

export * from "./errors.js";

const TOKEN_PATH = "/v1/token";
/** The boxes and the authority refuse an assertion that lives longer than 5 minutes; one request needs far less. */
const ASSERTION_LIFETIME = 60;
/** The page's request to the backend route is a small JSON object. */
const MAX_REQUEST = 4096;
/** A cached central token is handed out until this long before it expires (the page keeps it as long again). */
const TOKEN_MARGIN_S = 60;
/** The page's modules (src/), which `servePageModule` serves. */
const PAGE_MODULES = /^(index|errors|counters)\.js$/;

const b64u = (bytes) => Buffer.from(bytes).toString("base64url");

function algorithmOf(jwk) {
  if (jwk.alg) return jwk.alg;
  if (jwk.kty === "EC" && jwk.crv === "P-256") return "ES256";
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519") return "EdDSA";
  throw new TypeError(`a tool key is ES256 (EC P-256) or EdDSA (Ed25519), not ${jwk.kty}/${jwk.crv}`);
}

/**
 * A client assertion: a JWT signed with the tool's private JWK, `iss` = `sub` = the tool id, `aud`
 * = the token endpoint it is for, single use (`jti`), valid `lifetime` seconds (at most 300).
 */
export async function mintAssertion({ jwk, toolId, audience, lifetime = ASSERTION_LIFETIME, now = Math.floor(Date.now() / 1000) }) {
  if (!jwk?.d) throw new TypeError("mintAssertion needs the tool's private JWK (with d)");
  if (!toolId || !audience) throw new TypeError("mintAssertion needs toolId and audience");
  if (!(lifetime > 0 && lifetime <= 300)) throw new RangeError("an assertion lives 1 to 300 seconds");
  const alg = algorithmOf(jwk);
  const header = { alg, typ: "JWT", kid: jwk.kid };
  const claims = { iss: toolId, sub: toolId, aud: audience, iat: now, exp: now + lifetime, jti: b64u(randomBytes(16)) };
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claims))}`;
  const key = createPrivateKey({ key: jwk, format: "jwk" });
  const sig = alg === "EdDSA" ? sign(null, Buffer.from(input), key) : sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  return `${input}.${b64u(sig)}`;
}

/**
 * Whether `url` is the origin of a box `pattern` names: an origin ("https://box.example:8443"),
 * or a zone whose boxes are one label under it ("https://*.box.isp.example").
 */
function isBox(url, pattern) {
  const wild = pattern.startsWith("https://*.");
  const p = new URL(wild ? pattern.replace("*", "x") : pattern);
  if (!wild) return p.origin === url.origin;
  const dot = url.hostname.indexOf(".");
  return url.port === p.port && dot > 0 && url.hostname.slice(dot) === p.hostname.slice(1);
}

/**
 * An allow-list as given, without its unset entries (`[process.env.AUTHORITY]` with AUTHORITY unset:
 * a box-mode backend needs no authority); an entry that is set but not an https URL is named.
 */
function allowList(name, entries) {
  if (!Array.isArray(entries)) throw new TypeError(`Tool: ${name} is a list of https origins, not ${JSON.stringify(entries)}`);
  const set = entries.filter((e) => e != null && e !== "");
  for (const [i, e] of set.entries()) {
    let ok = false;
    try {
      ok = new URL(String(e).replace("*", "x")).protocol === "https:";
    } catch {
      // Named below.
    }
    if (!ok) throw new TypeError(`Tool: ${name}[${i}] is not an https URL: ${JSON.stringify(e)}`);
  }
  return set;
}

/** `https://host[:port]/v1/token` of an allowed origin (`allowed`: a predicate on the URL), or a Refused saying why not. */
function checkedEndpoint(endpoint, allowed, allowList) {
  if (endpoint == null) throw new NoTokenEndpoint();
  let url;
  try {
    url = new URL(endpoint);
  } catch {
    throw new Refused(`not a URL: ${endpoint}`, { status: 400, code: "invalid_request" });
  }
  if (url.protocol !== "https:" || url.pathname !== TOKEN_PATH || url.search || url.hash) {
    throw new Refused(`a token endpoint is https://…${TOKEN_PATH}, not ${endpoint}`, { status: 400, code: "invalid_request" });
  }
  if (!allowed(url)) {
    throw new Refused(`${url.origin} is not a token endpoint this tool uses (its allow-list: ${allowList.join(", ") || "empty"})`, {
      status: 403,
      code: "authority_not_allowed",
    });
  }
  return url.href;
}

/** The tool, as its backend holds it: its id, its private key, and the authorities it trusts. */
export class Tool {
  /**
   * `authorities`: the operators' authorities (origins, e.g. "https://auth.isp.example") this
   * backend gets tokens from; `boxes`: the boxes whose own token endpoint (box mode) it makes
   * assertions for, as zones ("https://*.box.isp.example": one label under it) or origins. A page
   * announcing any other is refused. `scope`: what to ask for (default: everything the tool is
   * registered for).
   */
  constructor({ id, key, authorities = [], boxes = [], scope, fetch } = {}) {
    if (!id || !key) throw new TypeError("a Tool needs id and key (its private JWK)");
    this.id = id;
    this.key = key;
    this.authorities = new Set(allowList("authorities", authorities).map((a) => new URL(a).origin));
    this.boxes = allowList("boxes", boxes);
    this.scope = scope;
    this.fetch = fetch ?? globalThis.fetch.bind(globalThis);
    /** Central tokens by endpoint and scope: { answer (a promise), until (ms, once known) }. */
    this.tokens = new Map();
  }

  isAuthority = (url) => this.authorities.has(url.origin);
  isBox = (url) => this.boxes.some((b) => isBox(url, b));

  /** A Tool whose key is read from a JWK file (as `boxapi keygen` writes it); `path` may come straight from the environment. */
  static async fromFile(path, options) {
    if (!path) throw new TypeError("Tool.fromFile needs the path of the tool's private JWK (TOOL_KEY unset?)");
    return new Tool({ ...options, key: JSON.parse(await readFile(path, "utf8")) });
  }

  /** A fresh single-use assertion for the token endpoint `audience`. */
  assertion(audience) {
    return mintAssertion({ jwk: this.key, toolId: this.id, audience });
  }

  /**
   * A token from an authority on the allow-list, server to server (`POST {authority}/v1/token`,
   * client_credentials with a client assertion). Refusals are typed errors: OAuth's
   * `invalid_scope` a ScopeError, `slow_down` (quota) a RetryAfter, the rest Refused.
   * A token for any box (no `box_url` in the answer) is shared by every page until 60 s before it
   * expires: the authority's quota (`tokens_per_hour`) counts tokens, not visitors.
   */
  async centralToken(tokenEndpoint, { scope = this.scope } = {}) {
    const url = checkedEndpoint(tokenEndpoint, this.isAuthority, [...this.authorities]);
    const key = `${url} ${scope ?? ""}`;
    const now = Date.now();
    for (const [k, t] of this.tokens) if (t.until != null && t.until <= now) this.tokens.delete(k);
    let entry = this.tokens.get(key);
    if (!entry) {
      // Pages asking at once wait for the same request.
      entry = { answer: this.requestToken(url, scope), until: null };
      this.tokens.set(key, entry);
      entry.answer.then(
        // A per-box token (box_url) is for one line's box only; one about to expire is not worth keeping.
        (got) => (got.box_url || !(got.expires_in > TOKEN_MARGIN_S) ? this.tokens.delete(key) : (entry.until = Date.now() + (got.expires_in - TOKEN_MARGIN_S) * 1000)),
        () => this.tokens.delete(key),
      );
    }
    const got = await entry.answer;
    // What is left of its life, for the page's own cache.
    return entry.until == null ? got : { ...got, expires_in: Math.round((entry.until - Date.now()) / 1000) + TOKEN_MARGIN_S };
  }

  async requestToken(url, scope) {
    const form = new URLSearchParams({ grant_type: "client_credentials", client_assertion_type: ASSERTION_TYPE, client_assertion: await this.assertion(url) });
    if (scope) form.set("scope", scope);
    let resp;
    try {
      // A redirect would re-post the assertion elsewhere: the allow-list is about where it goes.
      resp = await this.fetch(url, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: form.toString(), redirect: "error" });
    } catch (cause) {
      throw new Refused(`the authority ${url} cannot be reached`, { status: 502, code: "authority_unreachable", url, cause });
    }
    if (!resp.ok) throw await errorFromResponse(resp, url);
    const got = await resp.json().catch(() => null);
    if (typeof got?.access_token !== "string") {
      throw new Refused(`the authority ${url} answered 200 without a token`, { status: 502, code: "authority_invalid_answer", url });
    }
    return got;
  }

  /**
   * What the page's `connect({ backend })` asked for (`{ mode, token_endpoint }`): in box mode an
   * assertion for the box's token endpoint, which the page relays; in central mode a token from
   * the authority, or an assertion for the page to relay when the authority issues per-box tokens
   * (`invalid_target` to a request from here). Takes the page's JSON (`token_endpoint`) or a
   * TokenRequest as `connect({ token })` gives it (`tokenEndpoint`), for an agent on Node.
   */
  async answer({ mode, token_endpoint, tokenEndpoint } = {}) {
    const endpoint = token_endpoint ?? tokenEndpoint;
    // The page puts `scope` in the request it relays the assertion with.
    const relayed = async (url) => ({ assertion: await this.assertion(url), ...(this.scope ? { scope: this.scope } : {}) });
    if (mode === "box") return relayed(checkedEndpoint(endpoint, this.isBox, this.boxes));
    if (mode !== "central") throw new Refused(`mode is "box" or "central", not ${mode}`, { status: 400, code: "invalid_request" });
    try {
      return await this.centralToken(endpoint);
    } catch (e) {
      if (e.code !== "invalid_target") throw e;
      return relayed(checkedEndpoint(endpoint, this.isAuthority, [...this.authorities]));
    }
  }

  /**
   * The backend route for `node:http` (and frameworks on it): reads the page's JSON request, writes
   * the answer, and refusals as `{ error, error_description, reason }` with their status.
   * Authenticate your own user's session before calling it.
   */
  async handle(req, res) {
    let status = 200;
    let body;
    const headers = { "content-type": "application/json", "cache-control": "no-store" };
    try {
      const asked = JSON.parse(await readBody(req));
      body = await this.answer(asked && typeof asked === "object" ? asked : {});
    } catch (e) {
      if (e instanceof BoxApiError || e instanceof SyntaxError) {
        status = e instanceof BoxApiError ? e.status || 502 : 400;
        body = { error: e.code || "invalid_request", error_description: e.detail || e.message };
        if (e.reason) body.reason = e.reason;
        if (e instanceof RetryAfter) headers["retry-after"] = String(e.seconds);
      } else {
        // A fault of this backend (its key, its code): the page gets a 500, the log the cause.
        console.error("boxapi-client: the token route failed:", e);
        status = 500;
        body = { error: "server_error", error_description: "the tool's backend failed; see its log" };
      }
    }
    res.writeHead(status, headers);
    res.end(JSON.stringify(body));
  }
}

/**
 * Serves the page's modules of this package (`GET {prefix}index.js`, `errors.js`, `counters.js`)
 * for pages without a bundler; true when it answered.
 */
export function servePageModule(req, res, prefix = "/boxapi-client/") {
  const path = new URL(req.url, "http://x").pathname;
  const name = path.startsWith(prefix) ? path.slice(prefix.length) : "";
  if (!PAGE_MODULES.test(name)) return false;
  res.writeHead(200, { "content-type": "text/javascript" }).end(readFileSync(new URL(name, import.meta.url)));
  return true;
}

async function readBody(req) {
  let text = "";
  for await (const chunk of req) {
    text += chunk;
    if (text.length > MAX_REQUEST) throw new Refused("the request is too large", { status: 413, code: "invalid_request" });
  }
  return text;
}
