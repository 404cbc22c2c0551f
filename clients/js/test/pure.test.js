// What needs no daemon: refusals mapped to typed errors, NDJSON framing, counter wraps,
// cross-traffic sums, assertion minting, the authority allow-list.
import test from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import { BlockedByBrowser, NoTokenEndpoint, Refused, RetryAfter, ScopeError, ToolNotValid, TrafficTotals, connect, counterDelta, errorFor } from "../src/index.js";
import { Tool, mintAssertion } from "../src/node.js";
import { ndjsonLines } from "../src/counters.js";

const headers = (h) => new Headers(h);
const testKey = () => ({ ...generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" }), kid: "k" });

test("problems map to typed errors by code and reason (contract §6 rev. 3)", () => {
  const lapsed = errorFor(401, { code: "invalid_token", reason: "tool_not_valid", detail: "…", expires: "2026-01-01T00:00:00Z", not_before: null });
  assert.ok(lapsed instanceof ToolNotValid);
  assert.equal(lapsed.expires, "2026-01-01T00:00:00Z");
  assert.equal(lapsed.revoked, false);
  const revoked = errorFor(401, { code: "invalid_token", reason: "tool_revoked" });
  assert.ok(revoked instanceof ToolNotValid && revoked.revoked);
  const open = errorFor(429, { code: "rate_limited", reason: "stream_open" }, headers({ "retry-after": "87" }));
  assert.ok(open instanceof RetryAfter);
  assert.equal(open.seconds, 87);
  assert.equal(open.reason, "stream_open");
  assert.equal(errorFor(429, { code: "rate_limited", reason: "streams_full" }, headers({ "retry-after": "3" })).reason, "streams_full");
  const suspended = errorFor(503, { code: "suspended" }, headers({ "retry-after": "600" }));
  assert.ok(suspended instanceof RetryAfter);
  assert.equal(suspended.seconds, 600);
  assert.ok(errorFor(403, { code: "insufficient_scope" }) instanceof ScopeError);
  const plain = errorFor(401, { code: "invalid_token", detail: "the token has expired" });
  assert.ok(plain instanceof Refused && !(plain instanceof ToolNotValid));
  assert.ok(errorFor(502, null) instanceof Refused);
  assert.equal(errorFor(502, null).code, "http_502");
});

test("OAuth errors of /v1/token map to the same types (error, error_description: not RFC 9457)", () => {
  const scope = errorFor(400, { error: "invalid_scope", error_description: "the requested scope is not registered" });
  assert.ok(scope instanceof ScopeError);
  assert.equal(scope.code, "invalid_scope");
  assert.equal(scope.detail, "the requested scope is not registered");
  const quota = errorFor(429, { error: "slow_down", error_description: "spent" }, headers({ "retry-after": "1200" }));
  assert.ok(quota instanceof RetryAfter);
  assert.equal(quota.seconds, 1200);
  assert.ok(errorFor(401, { error: "invalid_client", error_description: "client assertion refused: bad signature" }) instanceof Refused);
  assert.ok(errorFor(400, { error: "invalid_target", error_description: "…" }) instanceof Refused);
  // A backend passing an authority's refusal on says its reason.
  assert.ok(errorFor(401, { error: "invalid_client", error_description: "x", reason: "tool_not_valid" }) instanceof ToolNotValid);
});

test("Retry-After as an HTTP date becomes seconds", () => {
  const at = new Date(Date.now() + 42_000).toUTCString();
  const e = errorFor(503, { code: "suspended" }, headers({ "retry-after": at }));
  assert.ok(e.seconds >= 40 && e.seconds <= 43, String(e.seconds));
});

test("counter deltas survive a 32-bit wrap and a reset, told apart by the time between the readings", () => {
  assert.equal(counterDelta(100, 250, 1000), 150);
  assert.equal(counterDelta(2 ** 32 - 10, 5, 1000), 15);
  assert.equal(counterDelta(2 ** 40, 1000, 1e6), 1000, "a 64-bit counter's reset");
  // A PPPoE reconnection resets a 64-bit counter below 2^32: a "wrap" would be 1.3 GB in 250 ms.
  assert.equal(counterDelta(3e9, 1e5, 250_000), 1e5);
  // The same drop over 2 s fits 10 Gbit/s: a wrap.
  assert.equal(counterDelta(3e9, 1e5, 2e6), 2 ** 32 - 3e9 + 1e5);
  assert.equal(counterDelta(2 ** 32 - 10, 5), 5, "no elapsed time: a reset");
});

test("cross-traffic sums sample by sample, across two wraps", () => {
  const t = new TrafficTotals("down");
  const s = (us, wan, client) => ({ monotonic_us: us, wan: { rx_bytes: wan, tx_bytes: 0 }, client: client == null ? null : { rx_bytes: client, tx_bytes: 0 } });
  t.add(s(0, 2 ** 32 - 1000, null));
  t.add(s(500_000, 3000, null)); // wrapped: +4000
  t.add(s(1_000_000, 2 ** 32 - 500, null)); // +(2^32 - 3500)
  t.add(s(1_500_000, 700, null)); // wrapped again: +1200
  const r = t.result(4_000_000);
  assert.equal(r.wan, 4000 + 2 ** 32 - 3500 + 1200);
  assert.equal(r.own, 4_000_000);
  assert.equal(r.ownFrom, "page");
  assert.equal(r.cross, r.wan - 4_000_000);
  assert.equal(r.seconds, 1.5);
  const up = new TrafficTotals("up");
  up.add({ monotonic_us: 0, wan: { rx_bytes: 0, tx_bytes: 10 }, client: { rx_bytes: 0, tx_bytes: 5 } });
  up.add({ monotonic_us: 1e6, wan: { rx_bytes: 999, tx_bytes: 110 }, client: { rx_bytes: 0, tx_bytes: 65 } });
  assert.deepEqual([up.result().wan, up.result().own, up.result().cross, up.result().ownFrom], [100, 60, 40, "box"]);
});

test("withheld counters give no cross-traffic, and say why", () => {
  const t = new TrafficTotals();
  t.add({ monotonic_us: 0, wan: null, client: null, withheld: ["counters"] });
  t.add({ monotonic_us: 1e6, wan: null, client: null, withheld: ["counters"] });
  const r = t.result(1000);
  assert.equal(r.wan, null);
  assert.equal(r.cross, null);
  assert.deepEqual(r.withheld, ["counters"]);
});

test("NDJSON lines split anywhere across chunks", async () => {
  async function* chunks() {
    yield '{"a":1}\n{"a"';
    yield ":2}";
    yield "\n\n";
    yield '{"a":3}';
  }
  const got = [];
  for await (const v of ndjsonLines(chunks())) got.push(v.a);
  assert.deepEqual(got, [1, 2, 3]);
});

function verifyJwt(jwt, publicJwk) {
  const [h, c, s] = jwt.split(".");
  const header = JSON.parse(Buffer.from(h, "base64url"));
  const key = createPublicKey({ key: publicJwk, format: "jwk" });
  const data = Buffer.from(`${h}.${c}`);
  const sig = Buffer.from(s, "base64url");
  const ok = header.alg === "EdDSA" ? verify(null, data, key, sig) : verify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, sig);
  return { ok, header, claims: JSON.parse(Buffer.from(c, "base64url")) };
}

for (const [alg, type, opts] of [["ES256", "ec", { namedCurve: "P-256" }], ["EdDSA", "ed25519", {}]]) {
  test(`an ${alg} assertion: signature, header and RFC 7523 claims`, async () => {
    const { privateKey, publicKey } = generateKeyPairSync(type, opts);
    const jwk = { ...privateKey.export({ format: "jwk" }), kid: "k1" };
    const jwt = await mintAssertion({ jwk, toolId: "demo", audience: "https://box.example/v1/token", now: 1_700_000_000 });
    const { ok, header, claims } = verifyJwt(jwt, publicKey.export({ format: "jwk" }));
    assert.ok(ok, "signature verifies");
    assert.deepEqual(header, { alg, typ: "JWT", kid: "k1" });
    assert.equal(claims.iss, "demo");
    assert.equal(claims.sub, "demo");
    assert.equal(claims.aud, "https://box.example/v1/token");
    assert.equal(claims.exp - claims.iat, 60);
    assert.match(claims.jti, /^[A-Za-z0-9_-]{22}$/);
    const again = verifyJwt(await mintAssertion({ jwk, toolId: "demo", audience: "x" }), publicKey.export({ format: "jwk" }));
    assert.notEqual(again.claims.jti, claims.jti, "single use: a new jti each time");
  });
}

test("assertions are refused for a public key or a lifetime over 5 minutes", async () => {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  await assert.rejects(mintAssertion({ jwk: publicKey.export({ format: "jwk" }), toolId: "t", audience: "a" }), /private JWK/);
  await assert.rejects(mintAssertion({ jwk: privateKey.export({ format: "jwk" }), toolId: "t", audience: "a", lifetime: 301 }), RangeError);
});

test("a backend refuses an authority that is not on its allow-list, before any request", async () => {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  let requests = 0;
  const tool = new Tool({
    id: "demo",
    key: { ...privateKey.export({ format: "jwk" }), kid: "k" },
    authorities: ["https://auth.isp.example"],
    fetch: async () => (requests++, new Response('{"access_token":"t","expires_in":900}')),
  });
  for (const endpoint of ["https://evil.example/v1/token", "https://auth.isp.example.evil.example/v1/token", "https://auth.isp.example:8443/v1/token"]) {
    await assert.rejects(tool.centralToken(endpoint), (e) => e instanceof Refused && e.code === "authority_not_allowed" && e.status === 403);
    await assert.rejects(tool.answer({ mode: "central", token_endpoint: endpoint }), (e) => e.code === "authority_not_allowed");
  }
  await assert.rejects(tool.centralToken("http://auth.isp.example/v1/token"), (e) => e.code === "invalid_request");
  await assert.rejects(tool.centralToken("https://auth.isp.example/other"), (e) => e.code === "invalid_request");
  assert.equal(requests, 0);
  await tool.centralToken("https://auth.isp.example/v1/token");
  assert.equal(requests, 1, "the allow-listed authority is asked");
});

test("a fetch that throws is BlockedByBrowser, saying what cannot be told apart", async () => {
  const f = async () => {
    throw new TypeError("fetch failed", { cause: Object.assign(new Error("x"), { code: "ECONNREFUSED" }) });
  };
  await assert.rejects(connect({ box: "https://box.example", backend: "/t", fetch: f }), (e) => {
    assert.ok(e instanceof BlockedByBrowser);
    assert.equal(e.diagnosis, "unreachable");
    assert.match(e.message, /cannot tell apart a missing CORS allowance, a refused local-network permission, an untrusted certificate and an unreachable server/);
    return true;
  });
});

test("box mode: assertions only for the boxes on the allow-list (a zone: one label under it, or an origin)", async () => {
  let requests = 0;
  const tool = new Tool({ id: "demo", key: testKey(), boxes: ["https://*.box.isp.example", "https://box.test:8443"], scope: "access", fetch: async () => (requests++, new Response("{}")) });
  for (const ok of ["https://k3x9q2.box.isp.example/v1/token", "https://box.test:8443/v1/token"]) {
    const answer = await tool.answer({ mode: "box", token_endpoint: ok });
    assert.equal(JSON.parse(Buffer.from(answer.assertion.split(".")[1], "base64url")).aud, ok);
    assert.equal(answer.scope, "access", "the page relays the narrower scope");
  }
  for (const bad of ["https://auth.unlisted.example/v1/token", "https://box.isp.example/v1/token", "https://a.b.box.isp.example/v1/token",
    "https://k3x9q2.box.isp.example:8443/v1/token", "https://k3x9q2.box.isp.example.evil.example/v1/token", "https://box.test/v1/token"]) {
    await assert.rejects(tool.answer({ mode: "box", token_endpoint: bad }), (e) => e instanceof Refused && e.code === "authority_not_allowed" && e.status === 403, bad);
  }
  await assert.rejects(new Tool({ id: "demo", key: testKey() }).answer({ mode: "box", token_endpoint: "https://box.test:8443/v1/token" }), (e) => e.code === "authority_not_allowed");
  assert.equal(requests, 0);
});

/** An HTTP server on loopback for `handler`, closed after the test `t`; its port. */
async function serve(t, handler) {
  const { createServer } = await import("node:http");
  const server = createServer(handler);
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  t.after(() => server.close());
  return server.address().port;
}

test("no redirect is followed with an assertion or a token request: the backend's, the page's relay, the locator", async (t) => {
  const received = [];
  const elsewhere = await serve(t, (req, res) => (received.push(`${req.method} ${req.url}`), res.end('{"access_token":"stolen","expires_in":900,"box_url":"https://x"}')));
  const redirecting = await serve(t, (req, res) => {
    if (req.url.startsWith("/.well-known/")) return res.end(JSON.stringify({ boxapi_mode: "box", token_endpoint: "https://box.test/v1/token" }));
    res.writeHead(307, { location: `http://127.0.0.1:${elsewhere}${req.url}` }).end();
  });
  // The https URLs the library checks, served by the loopback server (fetch's own redirect handling).
  const f = (url, init) => fetch(String(url).replace(/^https:\/\/[^/]+/, `http://127.0.0.1:${redirecting}`), init);
  const tool = new Tool({ id: "demo", key: testKey(), authorities: ["https://auth.test"], boxes: ["https://box.test"], fetch: f });
  await assert.rejects(tool.centralToken("https://auth.test/v1/token"), (e) => e instanceof Refused && e.code === "authority_unreachable" && e.status === 502);
  const box = await connect({ box: "https://box.test", token: () => tool.answer({ mode: "box", token_endpoint: "https://box.test/v1/token" }), fetch: f });
  await assert.rejects(box.token(), BlockedByBrowser);
  await assert.rejects(connect({ locator: "https://auth.test", backend: "/t", fetch: f }), BlockedByBrowser);
  assert.deepEqual(received, []);
});

test("the backend route answers the page: an assertion in box mode, refusals as JSON with their status", async (t) => {
  const { createServer } = await import("node:http");
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const good = new Tool({ id: "demo", key: { ...privateKey.export({ format: "jwk" }), kid: "k" }, authorities: ["https://auth.isp.example"], boxes: ["https://box.example"] });
  const broken = new Tool({ id: "demo", key: { kty: "EC", crv: "P-256", kid: "k", d: "AA" }, boxes: ["https://box.example"] });
  // An authority answering 200 with something else than JSON (a captive portal, a proxy's page).
  const html = new Tool({ id: "demo", key: testKey(), authorities: ["https://auth.isp.example"], fetch: async () => new Response("<html>") });
  const server = createServer((req, res) => (({ "/broken": broken, "/html": html })[req.url] ?? good).handle(req, res));
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  t.after(() => server.close());
  const post = async (path, body) => {
    const r = await fetch(`http://127.0.0.1:${server.address().port}${path}`, { method: "POST", body });
    return [r.status, await r.json()];
  };
  const [status, answer] = await post("/", JSON.stringify({ mode: "box", token_endpoint: "https://box.example/v1/token" }));
  assert.equal(status, 200);
  assert.equal(JSON.parse(Buffer.from(answer.assertion.split(".")[1], "base64url")).aud, "https://box.example/v1/token");
  assert.deepEqual((await post("/", "{not json"))[0], 400);
  const [s403, refused] = await post("/", JSON.stringify({ mode: "central", token_endpoint: "https://evil.example/v1/token" }));
  assert.equal(s403, 403);
  assert.equal(refused.error, "authority_not_allowed");
  assert.equal((await post("/", "x".repeat(5000)))[0], 413);
  const [s500, fault] = await post("/broken", JSON.stringify({ mode: "box", token_endpoint: "https://box.example/v1/token" }));
  assert.equal(s500, 500);
  assert.equal(fault.error, "server_error");
  const [s502, bad] = await post("/html", JSON.stringify({ mode: "central", token_endpoint: "https://auth.isp.example/v1/token" }));
  assert.equal(s502, 502, "the authority's fault, not the page's request");
  assert.equal(bad.error, "authority_invalid_answer");
});

/** A box answering from `counters` (a function of the request's number: a sample, or text that is not JSON). */
function fakeBox(counters) {
  let n = 0;
  const f = async (url) => {
    const path = new URL(String(url)).pathname;
    if (path.startsWith("/.well-known/")) return Response.json({ boxapi_mode: "box", token_endpoint: "https://box.test/v1/token" });
    if (path === "/v1/counters") {
      const got = counters(n++);
      if (got instanceof Error) throw got;
      return new Response(typeof got === "string" ? got : JSON.stringify(got));
    }
    return new Response("{}", { status: 404 });
  };
  return connect({ box: "https://box.test", token: async () => ({ access_token: "t" }), fetch: f });
}
const sample = (n) => ({ monotonic_us: n * 100_000, wan: { rx_bytes: n * 10, tx_bytes: 0 }, client: null });

test("polling leaves no abort listener behind per poll", async (t) => {
  let listeners = 0;
  const { addEventListener: add, removeEventListener: remove } = EventTarget.prototype;
  EventTarget.prototype.addEventListener = function (type, ...rest) {
    if (this instanceof AbortSignal && type === "abort") listeners++;
    return add.call(this, type, ...rest);
  };
  EventTarget.prototype.removeEventListener = function (type, ...rest) {
    if (this instanceof AbortSignal && type === "abort") listeners--;
    return remove.call(this, type, ...rest);
  };
  t.after(() => Object.assign(EventTarget.prototype, { addEventListener: add, removeEventListener: remove }));
  const box = await fakeBox(sample);
  const ctrl = new AbortController();
  let polls = 0;
  let most = 0;
  for await (const s of box.counters({ intervalMs: 100, poll: "always", signal: ctrl.signal })) {
    assert.equal(s.source, "poll");
    most = Math.max(most, listeners);
    if (++polls === 8) break;
  }
  assert.ok(most <= 3, `at most the caller's and one sleep's listeners at a time, not one per poll: ${most}`);
});

test("crossTraffic: a failure of its loop, of any kind, is stop()'s; a failed start() may be retried", async () => {
  const box = await fakeBox((n) => (n === 1 ? "<not json>" : sample(n)));
  const x = box.crossTraffic({ intervalMs: 100, poll: "always" });
  await x.start();
  await new Promise((ok) => setTimeout(ok, 300));
  await assert.rejects(x.stop({ ownBytes: 1 }), SyntaxError);
  const flaky = await fakeBox((n) => (n === 0 ? new TypeError("fetch failed") : sample(n)));
  const y = flaky.crossTraffic({ intervalMs: 100, poll: "always" });
  await assert.rejects(y.start(), BlockedByBrowser);
  assert.equal((await y.start()).source, "poll", "started on the second try");
  const r = await y.stop({ ownBytes: 100, overhead: 0.05 });
  assert.equal(r.own, 105, "the page's payload plus the headers' overhead");
});

test("a box whose discovery has token_endpoint null is a NoTokenEndpoint, on the page and at the backend, before any token request", async (t) => {
  let asked = 0;
  const port = await serve(t, (req, res) =>
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ issuer: "x", boxapi_mode: "central", token_endpoint: null })));
  const box = await connect({ box: `http://127.0.0.1:${port}`, token: async () => (asked++, { access_token: "t" }) });
  await assert.rejects(box.card(), (e) => e instanceof NoTokenEndpoint && e instanceof Refused && e.code === "no_token_endpoint" && /this box announces no token endpoint/.test(e.message));
  assert.equal(asked, 0);
  const tool = new Tool({ id: "demo", key: testKey(), authorities: ["https://auth.test"] });
  await assert.rejects(tool.answer({ mode: "central", token_endpoint: null }), (e) => e instanceof NoTokenEndpoint && /this box announces no token endpoint/.test(e.message));
});

test("allow-lists leave unset entries out (a box-mode backend without AUTHORITY) and name a bad one", async () => {
  const tool = new Tool({ id: "demo", key: testKey(), authorities: [undefined, ""], boxes: ["https://box.test", null] });
  const answer = await tool.answer({ mode: "box", token_endpoint: "https://box.test/v1/token" });
  assert.equal(typeof answer.assertion, "string");
  assert.throws(() => new Tool({ id: "demo", key: testKey(), authorities: ["https://a.test", "auth.test"] }), (e) => e instanceof TypeError && /authorities\[1\] is not an https URL: "auth.test"/.test(e.message));
  assert.throws(() => new Tool({ id: "demo", key: testKey(), boxes: "https://box.test" }), /boxes is a list/);
});

test("answer() takes connect({ token })'s TokenRequest as given (tokenEndpoint), for an agent on Node", async () => {
  const tool = new Tool({ id: "demo", key: testKey(), boxes: ["https://box.test"] });
  const answer = await tool.answer({ mode: "box", tokenEndpoint: "https://box.test/v1/token", audience: null, box: "https://box.test" });
  assert.equal(JSON.parse(Buffer.from(answer.assertion.split(".")[1], "base64url")).aud, "https://box.test/v1/token");
});
