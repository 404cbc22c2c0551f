// The library against the real daemons (dev/field.js): a box verifies assertions and tokens
// Node minted, in box mode and central mode; every typed error comes from a real refusal.
import test, { after, before } from "node:test";
import assert from "node:assert/strict";
import { createServer, request as httpRequest } from "node:http";
import { Refused, RetryAfter, ScopeError, ToolNotValid, connect } from "../src/index.js";
import { Tool } from "../src/node.js";
import { fetchTrusting, startField } from "../dev/field.js";

let field;
before(async () => {
  field = await startField({ streamSeconds: 3 });
});
after(() => field?.stop());

/** A tool backend as a function: the page's token callback calls it directly. */
const backend = (tool) => ({ mode, tokenEndpoint }) => tool.answer({ mode, token_endpoint: tokenEndpoint });
const toolFor = (id, extra = {}) =>
  new Tool({ id, key: field.jwk(id), authorities: [field.url.authority, field.url.perBoxAuthority], boxes: [field.url.box, field.url.small], fetch: field.fetch, ...extra });
const connectAs = (id, box, extra) => connect({ box, token: backend(toolFor(id, extra)), fetch: field.fetch });

test("box mode: the box's token endpoint accepts an ES256 assertion Node minted, and its token reads the card", async () => {
  const box = await connectAs("demo", field.url.box);
  assert.equal(box.mode, "box");
  assert.equal(box.tokenEndpoint, `${field.url.box}/v1/token`);
  const card = await box.card();
  assert.equal(card.access.technology, "ftth");
  assert.deepEqual(card.withheld, []);
  assert.equal(card.isWithheld("wifi"), false);
  assert.equal(JSON.stringify(card).includes("isWithheld"), false, "the helper is not part of the JSON");
});

test("box mode: an EdDSA tool key works the same", async () => {
  const box = await connectAs("edtool", field.url.box);
  assert.equal((await box.card()).box.model, "Test Box");
});

test("central mode: the backend gets a token from the allow-listed authority, which the box accepts", async () => {
  const tool = toolFor("demo");
  const got = await tool.centralToken(`${field.url.authority}/v1/token`);
  assert.equal(got.token_type, "Bearer");
  const claims = JSON.parse(Buffer.from(got.access_token.split(".")[1], "base64url"));
  assert.equal(claims.aud, field.url.central);
  assert.equal(claims.client_id, "demo");
  const box = await connectAs("demo", field.url.central);
  assert.equal(box.mode, "central");
  assert.equal((await box.card()).access.technology, "ftth");
});

test("central mode: an authority the box announces but the backend does not list is refused", async () => {
  const box = await connect({ box: field.url.central, token: backend(toolFor("demo", { authorities: ["https://auth.other.example"] })), fetch: field.fetch });
  await assert.rejects(box.card(), (e) => e instanceof Refused && e.code === "authority_not_allowed");
});

test("central mode: one token serves many pages (tokens_per_hour = 2, three connects cost one)", async () => {
  // The backend calls from 127.0.0.2, off any subscriber line: the answer names no box (box_url).
  const offLine = { fetch: fetchTrusting(field.ca, { localAddress: "127.0.0.2" }) };
  const tool = toolFor("quota", offLine);
  for (let visit = 0; visit < 3; visit++) {
    const box = await connect({ box: field.url.central, token: backend(tool), fetch: field.fetch });
    assert.equal((await box.card()).access.technology, "ftth");
  }
  // The quota had one token left, which a backend without that cache spends; then slow_down.
  await toolFor("quota", offLine).centralToken(`${field.url.authority}/v1/token`);
  await assert.rejects(toolFor("quota", offLine).centralToken(`${field.url.authority}/v1/token`), (e) => e instanceof RetryAfter && e.code === "slow_down");
});

test("box mode: a backend's narrower scope reaches the box's token endpoint through the page", async () => {
  const box = await connectAs("demo", field.url.box, { scope: "access" });
  assert.equal((await box.card()).access.technology, "ftth");
  await assert.rejects(box.countersOnce(), (e) => e instanceof ScopeError && e.code === "insufficient_scope");
});

test("leaving a counters loop frees the box's stream slot: the same terminal's next counters() streams", async () => {
  const box = await connectAs("demo", field.url.box);
  for await (const s of box.counters({ intervalMs: 100 })) {
    assert.equal(s.source, "stream");
    break;
  }
  const again = await box.counters({ intervalMs: 100, poll: "never" })[Symbol.asyncIterator]();
  assert.equal((await again.next()).value.source, "stream", "no stream_open: the first stream was closed");
  await again.return();
});

test("the locator finds the box of this line", async () => {
  const box = await connect({ locator: field.url.authority, token: backend(toolFor("demo")), fetch: field.fetch });
  assert.equal(box.url, field.url.central);
  assert.equal((await box.card()).access.technology, "ftth");
});

test("per-box audiences: the authority refuses the backend (invalid_target), the page relays an assertion instead", async () => {
  // The backend calls from 127.0.0.2, an address the locator does not map; the page from 127.0.0.1.
  const tool = toolFor("demo", { fetch: fetchTrusting(field.ca, { localAddress: "127.0.0.2" }) });
  await assert.rejects(tool.centralToken(`${field.url.perBoxAuthority}/v1/token`), (e) => e instanceof Refused && e.code === "invalid_target");
  const answer = await tool.answer({ mode: "central", token_endpoint: `${field.url.perBoxAuthority}/v1/token` });
  assert.equal(typeof answer.assertion, "string");
  const relayed = await (await field.fetch(`${field.url.perBoxAuthority}/v1/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "client_credentials", client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", client_assertion: answer.assertion }).toString(),
  })).json();
  assert.equal(relayed.box_url, field.url.central);
  const card = await (await field.fetch(`${field.url.central}/v1/access`, { headers: { authorization: `Bearer ${relayed.access_token}` } })).json();
  assert.equal(card.access.technology, "ftth");
});

test("scope: asking for more than the registration is invalid_scope (a ScopeError), not a smaller grant", async () => {
  const tool = toolFor("narrow", { scope: "access counters" });
  await assert.rejects(tool.centralToken(`${field.url.authority}/v1/token`), (e) => e instanceof ScopeError && e.code === "invalid_scope" && e.status === 400);
  // Registered for `access` only: the card reads, the counters are insufficient_scope.
  const box = await connectAs("narrow", field.url.box);
  await box.card();
  await assert.rejects(box.countersOnce(), (e) => e instanceof ScopeError && e.code === "insufficient_scope" && e.status === 403);
});

test("a lapsed tool: the box's 401 reason tool_not_valid, with its window, and its token endpoint's invalid_client, are ToolNotValid", async () => {
  const central = await connectAs("lapsed", field.url.central);
  await assert.rejects(central.card(), (e) => e instanceof ToolNotValid && e.reason === "tool_not_valid" && e.expires === "2020-01-01T00:00:00Z" && !e.revoked);
  const boxMode = await connectAs("lapsed", field.url.box);
  await assert.rejects(boxMode.card(), (e) => e instanceof ToolNotValid && e.code === "invalid_client" && e.reason === "tool_not_valid");
});

test("a revoked tool is ToolNotValid (tool_revoked) at the API and at the token endpoint", async (t) => {
  const box = await connectAs("edtool", field.url.box);
  await box.token();
  field.ctl("box", "revoke", "edtool");
  t.after(() => field.ctl("box", "unrevoke", "edtool"));
  await assert.rejects(box.card(), (e) => e instanceof ToolNotValid && e.revoked && e.reason === "tool_revoked");
  const fresh = await connectAs("edtool", field.url.box);
  await assert.rejects(fresh.card(), (e) => e instanceof ToolNotValid && e.revoked);
});

test("suspended: discovery answers 503, a RetryAfter with the operator's delay", async (t) => {
  field.ctl("central", "suspend", "--retry-after", "7");
  t.after(() => field.ctl("central", "resume"));
  await assert.rejects(connectAs("demo", field.url.central), (e) => e instanceof RetryAfter && e.code === "suspended" && e.seconds === 7 && e.status === 503);
});

test("a second stream from this terminal: stream_open with the first one's time left, then polling", async () => {
  const box = await connectAs("demo", field.url.box);
  const first = box.counters({ intervalMs: 100 })[Symbol.asyncIterator]();
  assert.equal((await first.next()).value.source, "stream");
  const other = await connectAs("demo", field.url.box);
  const never = other.counters({ intervalMs: 100, poll: "never" })[Symbol.asyncIterator]();
  await assert.rejects(never.next(), (e) => e instanceof RetryAfter && e.reason === "stream_open" && e.seconds >= 1 && e.seconds <= 3);
  const polled = [];
  for await (const s of other.counters({ intervalMs: 100 })) {
    polled.push(s);
    if (polled.length === 3) break;
  }
  assert.deepEqual(polled.map((s) => s.source), ["poll", "poll", "poll"]);
  assert.equal(other.streamRefusal.reason, "stream_open");
  await first.return();
});

test("streams full (half the box's connections): streams_full, then polling", async () => {
  // Three terminals (loopback addresses) on a box with room for two streams.
  const terminal = (address) =>
    connect({ box: field.url.small, token: backend(toolFor("demo")), fetch: fetchTrusting(field.ca, { localAddress: address }) });
  const held = [];
  for (const address of ["127.0.0.1", "127.0.0.2"]) {
    const it = (await terminal(address)).counters({ intervalMs: 500, poll: "never" })[Symbol.asyncIterator]();
    assert.equal((await it.next()).value.source, "stream");
    held.push(it);
  }
  try {
    const third = await terminal("127.0.0.3");
    const never = third.counters({ intervalMs: 100, poll: "never" })[Symbol.asyncIterator]();
    await assert.rejects(never.next(), (e) => e instanceof RetryAfter && e.reason === "streams_full" && e.seconds >= 1 && e.seconds <= 3);
    const first = await third.counters({ intervalMs: 100 })[Symbol.asyncIterator]().next();
    assert.equal(first.value.source, "poll");
    assert.equal(third.streamRefusal.reason, "streams_full");
  } finally {
    for (const it of held) await it.return();
  }
});

test("a stream the box ends (stream_max_seconds = 3) is reopened: samples go on past it", async () => {
  const box = await connectAs("demo", field.url.box);
  const seen = [];
  // Bounded in samples too (a stalled stream gives none; the test timeout ends that).
  for await (const s of box.counters({ intervalMs: 250 })) {
    seen.push(s);
    if (s.monotonic_us - seen[0].monotonic_us > 4.5e6 || seen.length >= 60) break;
  }
  assert.ok(seen.at(-1).monotonic_us - seen[0].monotonic_us > 4.5e6, `past the 3 s stream in ${seen.length} samples`);
  assert.ok(seen.every((s) => s.source === "stream"));
  const gaps = seen.slice(1).map((s, i) => s.monotonic_us - seen[i].monotonic_us);
  assert.ok(Math.max(...gaps) < 2e6, `no long gap at the reopening: ${Math.max(...gaps)} µs`);
});

test("withheld sections are explicit in the card, and the counters say so", async (t) => {
  field.ctl("box", "withhold", "wifi", "--tool", "demo");
  field.ctl("box", "withhold", "counters", "--tool", "demo");
  t.after(() => (field.ctl("box", "allow", "wifi", "--tool", "demo"), field.ctl("box", "allow", "counters", "--tool", "demo")));
  const box = await connectAs("demo", field.url.box);
  const card = await box.card();
  assert.equal(card.wifi, null);
  assert.ok(card.isWithheld("wifi"));
  assert.equal(card.isWithheld("access"), false);
  const x = box.crossTraffic({ intervalMs: 100, poll: "always" });
  await x.start();
  const r = await x.stop({ ownBytes: 10 });
  assert.equal(r.cross, null);
  assert.ok(r.withheld.includes("counters"));
});

/** Serves `n` zero bytes per request on loopback (the boxes' WAN interface here). */
function blobServer() {
  const server = createServer((req, res) => {
    const n = Number(new URL(req.url, "http://x").searchParams.get("n"));
    res.writeHead(200, { "content-length": n });
    res.end(Buffer.alloc(n));
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

function download(port, n) {
  return new Promise((ok, fail) => {
    httpRequest({ host: "127.0.0.1", port, path: `/?n=${n}` }, (res) => {
      let got = 0;
      res.on("data", (d) => (got += d.length));
      res.on("end", () => ok(got));
    }).on("error", fail).end();
  });
}

test("cross-traffic: the box's WAN (lo) counts our download and another one we did not make", async () => {
  const server = await blobServer();
  try {
    const box = await connectAs("demo", field.url.box);
    const x = box.crossTraffic({ intervalMs: 100 });
    await x.start();
    const own = 3_000_000;
    const cross = 5_000_000;
    const [got] = await Promise.all([download(server.address().port, own), download(server.address().port, cross)]);
    const r = await x.stop({ ownBytes: got });
    assert.equal(r.source, "stream");
    assert.equal(r.ownFrom, "page", "no per-terminal counts on loopback");
    assert.equal(r.own, own);
    assert.ok(r.wan >= own + cross, `wan ${r.wan} >= ${own + cross}`);
    assert.ok(r.cross >= cross, `cross ${r.cross} >= ${cross}`);
    assert.ok(r.seconds > 0);
  } finally {
    server.close();
  }
});
