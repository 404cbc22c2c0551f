// What needs no daemon: refusals mapped to typed errors, NDJSON framing, counter wraps,
// cross-traffic sums, assertion minting, the authority allow-list.
import test from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import { BlockedByBrowser, Refused, RetryAfter, ScopeError, ToolNotValid, TrafficTotals, connect, counterDelta, errorFor } from "../src/index.js";
import { Tool, mintAssertion } from "../src/node.js";
import { ndjsonLines } from "../src/counters.js";

const headers = (h) => new Headers(h);

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

test("counter deltas survive a 32-bit wrap and a 64-bit counter's reset", () => {
  assert.equal(counterDelta(100, 250), 150);
  assert.equal(counterDelta(2 ** 32 - 10, 5), 15);
  assert.equal(counterDelta(2 ** 40, 1000), 1000);
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
    fetch: async () => (requests++, new Response("{}")),
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

test("the backend route answers the page: an assertion in box mode, refusals as JSON with their status", async (t) => {
  const { createServer } = await import("node:http");
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const good = new Tool({ id: "demo", key: { ...privateKey.export({ format: "jwk" }), kid: "k" }, authorities: ["https://auth.isp.example"] });
  const broken = new Tool({ id: "demo", key: { kty: "EC", crv: "P-256", kid: "k", d: "AA" } });
  const server = createServer((req, res) => (req.url === "/broken" ? broken : good).handle(req, res));
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
});
