// Playwright (playwright-core) driving Debian's Chromium against the real daemon and the example
// tool page. Every case asserts what the page shows; screenshots go to $OUT.
//   BOX_PORT, OUT, HOME (with an NSS DB trusting the test CA) come from run.sh.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const out = process.env.OUT;
const flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
let passed = 0;
const results = [];

async function withBrowser(extraFlags, fn) {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: [...flags, ...extraFlags] });
  try { await fn(browser); } finally { await browser.close(); }
}

async function visit(browser, url, shot, { grant } = {}) {
  const context = await browser.newContext();
  if (grant) {
    // What the user grants at Chrome's prompt (Playwright maps it to localNetworkAccess /
    // localNetwork / loopbackNetwork: the box here is on loopback).
    await context.grantPermissions(["local-network-access"], { origin: new URL(url).origin });
  }
  const page = await context.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(`${r.method()} ${r.url()}`));
  await page.goto(url);
  await page.waitForFunction(() => ["ok", "error"].includes(document.body.dataset.state), null, { timeout: 20000 });
  const state = await page.evaluate(() => ({ ...document.body.dataset, status: document.getElementById("status").textContent }));
  await page.screenshot({ path: `${out}/${shot}.png`, fullPage: true });
  await context.close();
  return { state, requests };
}

async function test(name, fn) {
  try {
    await fn();
    passed++;
    results.push(`ok   ${name}`);
  } catch (e) {
    results.push(`FAIL ${name}: ${e.message}`);
  }
}

const boxPort = process.env.BOX_PORT;
await withBrowser([], async (browser) => {
  await test("allowed origin reads the card through a CORS preflight and streams the counters", async () => {
    const { state, requests } = await visit(browser, "http://localhost:8000/", "allowed-origin");
    assert.equal(state.state, "ok", state.status);
    assert.equal(state.technology, "ftth");
    assert.equal(state.mode, "central", "discovery said tokens come from elsewhere");
    // The Authorization header makes it a non-simple request: the browser sent OPTIONS first.
    assert.ok(requests.some((r) => r.startsWith("GET https://localhost:" + boxPort + "/v1/access")), requests.join("\n"));
    // The counters came from the NDJSON stream, read with fetch and a stream reader.
    assert.equal(state.streamError, undefined, state.streamError);
    assert.ok(Number(state.samples) >= 2, `samples: ${state.samples}`);
    assert.ok(requests.some((r) => r.includes("/v1/counters/stream?interval_ms=250")), requests.join("\n"));
  });
  await test("box mode: discovery, then a relayed client assertion at the box's token endpoint", async () => {
    const { state } = await visit(browser, "http://localhost:8002/", "box-mode");
    assert.equal(state.state, "ok", state.status);
    assert.equal(state.mode, "box");
    assert.equal(state.technology, "ftth");
  });
  await test("an origin that is not allow-listed is blocked by the browser itself", async () => {
    const { state } = await visit(browser, "http://localhost:8001/", "foreign-origin");
    assert.equal(state.state, "error");
    assert.equal(state.code, "blocked", state.status);
  });
  await test("an allowed origin with another tool's token is refused by the box", async () => {
    const { state } = await visit(browser, "http://localhost:8000/?tool=other", "other-tools-token");
    assert.equal(state.state, "error");
    assert.equal(state.code, "origin_not_allowed", state.status);
  });
});

// Local Network Access (Chrome 142+): the tool page's address counts as public, the box as local.
const lna = ["--ip-address-space-overrides=127.0.0.1:8000=public,[::1]:8000=public"];
await withBrowser(lna, async (browser) => {
  await test("public page without the local-network-access permission: blocked", async () => {
    const { state } = await visit(browser, "http://localhost:8000/", "lna-denied");
    assert.equal(state.state, "error");
    assert.equal(state.code, "blocked", state.status);
  });
  await test("public page with the local-network-access permission granted: reads the card", async () => {
    const { state } = await visit(browser, "http://localhost:8000/", "lna-granted", { grant: true });
    assert.equal(state.state, "ok", state.status);
    assert.equal(state.technology, "ftth");
  });
});

for (const r of results) console.log(r);
console.log(`playwright: ${passed} passed, ${results.length - passed} failed`);
process.exit(passed === results.length ? 0 : 1);
