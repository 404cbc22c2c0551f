// boxapi-client, the page's part (also usable by native agents on Node, which have fetch): find
// the box, learn from its discovery where tokens come from, get one through the tool's own
// backend, read the card, follow the counters and measure cross-traffic. No dependencies.
import { BlockedByBrowser, NoTokenEndpoint, Refused, RetryAfter, errorFromResponse } from "./errors.js";
import { TrafficTotals, chunks, ndjsonLines } from "./counters.js";

export { BoxApiError, BlockedByBrowser, ToolNotValid, ScopeError, RetryAfter, Refused, NoTokenEndpoint, errorFor } from "./errors.js";
export { counterDelta, TrafficTotals } from "./counters.js";

export const DISCOVERY_PATH = "/.well-known/oauth-authorization-server";
/** RFC 7523's client_assertion_type, which a relayed assertion is sent with. */
export const ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/** A cached token is renewed this long before it expires (the box ends a stream when its token expires). */
const TOKEN_MARGIN_MS = 60_000;
/** A host Chromium counts as loopback, where `loopback-network` may apply instead of `local-network`. */
const isLoopback = (host) => host === "localhost" || host.endsWith(".localhost") || /^127\.\d+\.\d+\.\d+$/.test(host) || host === "[::1]";

/**
 * The states of the local-network permissions that may apply to `url`: `local-network` (Chromium
 * 145+), plus `loopback-network` for a loopback host; `local-network-access` (142-144) only when
 * the browser knows neither, as Chromium 156 still answers it ("denied") whatever was granted.
 */
async function permissionStates(url) {
  const query = globalThis.navigator?.permissions?.query?.bind(globalThis.navigator.permissions);
  if (!query) return {};
  const permissions = {};
  const read = async (name) => {
    try {
      permissions[name] = (await query({ name })).state;
    } catch {
      // A name this browser does not know.
    }
  };
  await read("local-network");
  if (isLoopback(new URL(url).hostname)) await read("loopback-network");
  if (!Object.keys(permissions).length) await read("local-network-access");
  return permissions;
}

/** What a page can infer after the browser refused a request without saying why. */
async function diagnose(f, url, cause) {
  const permissions = await permissionStates(url);
  const states = Object.values(permissions);
  if (typeof document === "undefined") {
    // Not a browser (Node): the network layer says what happened in the error's cause.
    const code = String(cause?.cause?.code ?? cause?.code ?? "");
    const cert = /CERT|SELF_SIGNED|UNABLE_TO|ALTNAME/.test(code);
    return { diagnosis: cert ? "certificate" : code ? "unreachable" : "unknown", permissions, networkCode: code };
  }
  // Every local-network permission that may apply refused: nothing local can get through.
  if (states.length && states.every((st) => st === "denied")) return { diagnosis: "local-network-permission", permissions };
  // A no-cors request gets through whatever CORS says: if it succeeds, the network, the
  // certificate and the local-network permission are fine, and CORS is what refused.
  let reachable = false;
  try {
    await f(new URL(DISCOVERY_PATH, url), { mode: "no-cors", cache: "no-store", credentials: "omit" });
    reachable = true;
  } catch {
    // Refused below the page: permission, certificate, or no route to the box.
  }
  if (reachable) return { diagnosis: "cors", permissions };
  // Any permission that may apply and is not granted may be the cause (a loopback host may be
  // either: which one applies depends on the address space the browser gives it).
  if (states.some((st) => st !== "granted")) return { diagnosis: "local-network-permission", permissions };
  return { diagnosis: "network-or-certificate", permissions };
}

const EXPLAIN = {
  cors: "the server answered but did not allow this page's origin (CORS): the origin is not registered for this tool exactly as the browser writes it, or the tool is revoked",
  "local-network-permission": "the user has not granted (or refused) the local-network permission, or an embedding page did not delegate it",
  "network-or-certificate": "the server is unreachable from here (not on this network, API switched off) or the browser does not trust its certificate",
  certificate: "the server's certificate is not trusted",
  unreachable: "the server is unreachable",
  unknown: "the page cannot tell which of these",
};

/**
 * fetch, with a browser's silent refusal (TypeError) turned into BlockedByBrowser and a refused
 * answer into its typed error. `probe`: diagnose a refusal (requests to the box or authority).
 */
async function request(f, url, init, probe = true) {
  let resp;
  try {
    resp = await f(url, init);
  } catch (cause) {
    if (init?.signal?.aborted) throw cause;
    const found = probe ? await diagnose(f, url, cause) : { diagnosis: "unknown", permissions: {} };
    const e = new BlockedByBrowser(
      `the request to ${url} was stopped before any answer reached the page; likely: ${EXPLAIN[found.diagnosis]}. ` +
        "A page cannot tell apart a missing CORS allowance, a refused local-network permission, an untrusted certificate and an unreachable server.",
      { url: String(url), cause, code: "blocked_by_browser", reason: found.diagnosis },
    );
    e.diagnosis = found.diagnosis;
    e.permissions = found.permissions;
    throw e;
  }
  if (!resp.ok) throw await errorFromResponse(resp, String(url));
  return resp;
}

/** The box serving the line this page runs on, from the operator's locator (`GET {authority}/v1/locate`). */
export async function locate(authority, { fetch } = {}) {
  const f = fetch ?? globalThis.fetch.bind(globalThis);
  // Redirects are not followed: the box's URL comes from the authority itself, nowhere else.
  const r = await request(f, new URL("/v1/locate", authority), { credentials: "omit", cache: "no-store", redirect: "error" });
  const { box_url: url } = await r.json();
  if (typeof url !== "string") throw new Refused("the locator's answer has no box_url", { url: String(authority) });
  return url;
}

/** A token source that asks the tool's backend (`POST url`, JSON), as `boxapi-client/node` answers. */
export function backendTokens(url, { fetch } = {}) {
  const f = fetch ?? globalThis.fetch.bind(globalThis);
  return async ({ mode, tokenEndpoint, audience }) => {
    const r = await request(f, url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ mode, token_endpoint: tokenEndpoint, audience }),
      cache: "no-store",
      credentials: "same-origin",
    }, false);
    return r.json();
  };
}

/**
 * Finds the box (`box`, or `locator`: the operator's authority), reads its discovery, and returns
 * a connected Box. Tokens come from `token` (a callback) or `backend` (the URL of the tool's
 * backend route, see `boxapi-client/node`).
 */
export async function connect({ box, locator, token, backend, fetch } = {}) {
  const f = fetch ?? globalThis.fetch.bind(globalThis);
  if (!box && !locator) throw new TypeError("connect() needs box (its URL) or locator (the operator's authority)");
  if (!token && !backend) throw new TypeError("connect() needs token (a callback) or backend (your backend's token route)");
  const url = (box ?? (await locate(locator, { fetch: f }))).replace(/\/+$/, "");
  const r = await request(f, new URL(DISCOVERY_PATH, url), { cache: "no-store", credentials: "omit" });
  return new Box(url, await r.json(), token ?? backendTokens(backend, { fetch: f }), f);
}

/** Waits `ms`, or less if `signal` aborts; leaves no listener on `signal` either way (one per poll would pile up). */
const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const onAbort = () => (clearTimeout(t), resolve());
    const t = setTimeout(() => (signal?.removeEventListener("abort", onAbort), resolve()), ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });

export class Box {
  constructor(url, discovery, getToken, f) {
    this.url = url;
    this.discovery = discovery;
    /** "box": the box issues tokens itself; "central": the operator's authority does. */
    this.mode = discovery.boxapi_mode;
    this.tokenEndpoint = discovery.token_endpoint ?? null;
    this.audience = discovery.boxapi_audience ?? null;
    this.getToken = getToken;
    this.fetch = f;
    this.cached = null;
    /** Why the last counters() fell back to polling (a RetryAfter or a 404), or null. */
    this.streamRefusal = null;
  }

  /** A valid access token: the cached one, or a new one from the tool's backend (relaying an assertion if it gives one). */
  async token({ fresh = false } = {}) {
    if (!fresh && this.cached && this.cached.until > Date.now()) return this.cached.token;
    // Neither mode can give a token then: say so here, not as the backend's "not a URL: null".
    if (!this.tokenEndpoint) throw new NoTokenEndpoint(this.url);
    let got = await this.getToken({ mode: this.mode, tokenEndpoint: this.tokenEndpoint, audience: this.audience, box: this.url });
    if (got && typeof got.assertion === "string") {
      const form = new URLSearchParams({ grant_type: "client_credentials", client_assertion_type: ASSERTION_TYPE, client_assertion: got.assertion });
      // The backend's narrower scope (Tool's `scope`), which only the request can carry.
      if (typeof got.scope === "string" && got.scope) form.set("scope", got.scope);
      const r = await request(this.fetch, this.tokenEndpoint, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: form.toString(),
        cache: "no-store",
        credentials: "omit",
        // A redirect would re-post the single-use assertion to wherever it points.
        redirect: "error",
      });
      got = await r.json();
    }
    if (!got || typeof got.access_token !== "string") throw new Refused("the tool's backend gave neither access_token nor assertion");
    const life = Number(got.expires_in ?? 900) * 1000;
    this.cached = { token: got.access_token, until: Date.now() + Math.max(life - TOKEN_MARGIN_MS, life / 2) };
    return got.access_token;
  }

  /** GET a token-protected path; an `invalid_token` refusal gets one new token and one retry. */
  async get(path, { signal } = {}) {
    for (let attempt = 0; ; attempt++) {
      const token = await this.token({ fresh: attempt > 0 });
      try {
        return await request(this.fetch, this.url + path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store", credentials: "omit", signal });
      } catch (e) {
        if (attempt > 0 || !(e instanceof Refused) || e.code !== "invalid_token") throw e;
      }
    }
  }

  /**
   * The identity card (`GET /v1/access`). `withheld` is always a list, and `isWithheld(section)`
   * tells a section the subscriber does not share (null by choice) from one the box does not know.
   */
  async card() {
    const card = await (await this.get("/v1/access")).json();
    if (!Array.isArray(card.withheld)) card.withheld = [];
    Object.defineProperty(card, "isWithheld", { value: (section) => card.withheld.includes(section), enumerable: false });
    return card;
  }

  /** One counters snapshot (`GET /v1/counters`). */
  async countersOnce({ signal } = {}) {
    const sample = await (await this.get("/v1/counters", { signal })).json();
    sample.source = "poll";
    return sample;
  }

  /**
   * The counters, one sample every `intervalMs`, as an async iterator: from the stream
   * (`/v1/counters/stream`, reopened when the box ends one), or by polling when the box will not
   * give this terminal a stream (another one open: `stream_open`, streams full: `streams_full`,
   * an older box: 404). `poll`: "auto" (default), "never" (throw instead) or "always".
   * Leaving the loop (break, return, or `signal`) closes the connection.
   */
  async *counters({ intervalMs = 250, signal, poll = "auto" } = {}) {
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) ctrl.abort();
    this.streamRefusal = null;
    try {
      while (poll !== "always" && !ctrl.signal.aborted) {
        let resp;
        try {
          resp = await this.get(`/v1/counters/stream?interval_ms=${intervalMs}`, { signal: ctrl.signal });
        } catch (e) {
          if (ctrl.signal.aborted) return;
          const fallBack = (e instanceof RetryAfter && e.code === "rate_limited" && e.reason) || (e instanceof Refused && e.status === 404);
          if (poll !== "auto" || !fallBack) throw e;
          this.streamRefusal = e;
          break;
        }
        let lines = 0;
        try {
          for await (const sample of ndjsonLines(chunks(resp.body.pipeThrough(new TextDecoderStream())))) {
            lines += 1;
            sample.source = "stream";
            yield sample;
          }
        } catch (e) {
          if (ctrl.signal.aborted) return;
          if (!(e instanceof TypeError) && !(e instanceof DOMException)) throw e;
          // The connection broke: open another stream below.
        }
        // The box ended this stream (its 120 s, or the token's expiry): open the next one, after a
        // pause if this one gave nothing (no loop of empty streams).
        if (lines === 0) await sleep(intervalMs, ctrl.signal);
      }
      while (!ctrl.signal.aborted) {
        const started = Date.now();
        let sample;
        try {
          sample = await this.countersOnce({ signal: ctrl.signal });
        } catch (e) {
          if (ctrl.signal.aborted) return;
          throw e;
        }
        yield sample;
        await sleep(Math.max(0, intervalMs - (Date.now() - started)), ctrl.signal);
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      ctrl.abort();
    }
  }

  /** A cross-traffic measurement: `start()` before the transfer, `stop({ ownBytes })` after it. */
  crossTraffic(options) {
    return new CrossTraffic(this, options);
  }
}

/**
 * Follows the box's WAN counters during a transfer. `stop()` ends the stream and reads the
 * counters once more, so its last reading is taken by the box after the transfer was over.
 */
export class CrossTraffic {
  constructor(box, { intervalMs = 250, direction = "down", poll = "auto", onSample } = {}) {
    this.box = box;
    this.options = { intervalMs, poll };
    this.totals = new TrafficTotals(direction);
    this.onSample = onSample;
    this.ctrl = null;
    this.loop = null;
    this.source = null;
  }

  async start() {
    if (this.ctrl) throw new Error("this measurement is already started");
    this.ctrl = new AbortController();
    const it = this.box.counters({ ...this.options, signal: this.ctrl.signal })[Symbol.asyncIterator]();
    let first;
    try {
      first = await it.next();
      if (first.done) throw new Refused("the counters ended before the first sample", { url: this.box.url });
    } catch (e) {
      // Not started: start() may be called again.
      this.ctrl.abort();
      this.ctrl = null;
      throw e;
    }
    this.take(first.value);
    this.source = first.value.source;
    this.loop = (async () => {
      for (let n = await it.next(); !n.done; n = await it.next()) this.take(n.value);
    })().catch((e) => e);
    return first.value;
  }

  take(sample) {
    this.totals.add(sample);
    this.onSample?.(sample, this.totals.result());
  }

  /**
   * Ends the measurement: `ownBytes` is what the page itself transferred (used when the box has no
   * count of this terminal's own bytes). It counts payload, the box counts frames: `overhead` is
   * the fraction the headers add (about 0.045 for TCP over IPv4 and Ethernet; default 0, which
   * reports that much of the page's own traffic as cross-traffic). Returns { wan, own, cross,
   * seconds, ownFrom, source, samples, withheld }; `wan` and `cross` are null when the subscriber
   * withholds the counters.
   */
  async stop({ ownBytes, overhead = 0 } = {}) {
    if (!this.ctrl) throw new Error("stop() before start()");
    if (!(overhead >= 0 && overhead < 1)) throw new RangeError("overhead is a fraction, 0 to 1");
    this.ctrl.abort();
    const failed = await this.loop;
    // The loop's failure (a refusal, a broken line, a bug) is this measurement's.
    if (failed instanceof Error) throw failed;
    this.take(await this.box.countersOnce());
    const own = ownBytes == null ? ownBytes : Math.round(ownBytes * (1 + overhead));
    return { ...this.totals.result(own), source: this.source };
  }
}
