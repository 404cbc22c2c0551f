// Playwright (playwright-core) driving Debian's Chromium against the real boxes and authority, with
// the example tool page (examples/speedtest, which uses only boxapi-client). Every page is on an
// origin Chromium counts as public (--ip-address-space-overrides) and every box as on the LAN
// ("local"), as in the field; the authority is public. Every case asserts what the page shows;
// screenshots go to $OUT.
//   BOX_PORT (central mode), BOX2_PORT (box mode), AUTH_PORT, WORK (control sockets, CA), TOKEN
//   (for the central-mode box), BOX (the binary, for ctl), OUT, HOME (an NSS DB trusting the test
//   CA) come from run.sh (the field: daemons.mjs).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer, request } from "node:http";
import { connect } from "../../clients/js/src/index.js";
import { servePageModule } from "../../clients/js/src/node.js";
import { fetchTrusting, freePort } from "../../clients/js/dev/field.js";
import { runGuide } from "./guide.mjs";

const { OUT: out, BOX_PORT: boxPort, BOX2_PORT: box2Port, AUTH_PORT: authPort, WORK: work, BOX: boxBin, TOKEN: token } = process.env;
const pages = [8000, 8001, 8002, 8003, 8004, 8005, 8006];
// A box on the LAN that is down (nothing listens on its port).
const downPort = await freePort();
const spaces = [
  // The guide's page (:8004) gets exactly what the guide advises: its backend binds 127.0.0.1, the
  // page is browsed there, and 127.0.0.1 alone is overridden (guide.mjs checks the prompt is needed).
  ...pages.flatMap((p) => (p === 8004 ? [`127.0.0.1:${p}=public`] : [`127.0.0.1:${p}=public`, `[::1]:${p}=public`])),
  `127.0.0.1:${authPort}=public`,
  `127.0.0.1:${boxPort}=local`,
  `127.0.0.1:${box2Port}=local`,
  `127.0.0.1:${downPort}=local`,
];
const flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  `--ip-address-space-overrides=${spaces.join(",")}`,
  // Box names that are not loopback names (as in the field), on this machine's boxes.
  "--host-resolver-rules=MAP *.box.test 127.0.0.1"];
const ctl = (sock, ...args) => execFileSync(boxBin, ["ctl", "--socket", `${work}/${sock}`, ...args], { encoding: "utf8" });
const results = [];

async function test(name, fn) {
  try {
    await fn();
    results.push(`ok   ${name}`);
  } catch (e) {
    results.push(`FAIL ${name}: ${e.message}`);
  }
}

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: flags });
const cdp = await browser.newBrowserCDPSession();

/**
 * A context whose origin holds exactly these DevTools permissions (Chromium 145+: `localNetwork`
 * for LAN addresses, `loopbackNetwork` for loopback), granted as a user would at the prompt.
 */
async function contextWith(origin, permissions) {
  const context = await browser.newContext();
  if (permissions.length) {
    const page = await context.newPage();
    const { targetInfos } = await cdp.send("Target.getTargets");
    const browserContextId = targetInfos.find((t) => t.type === "page" && t.url === "about:blank" && t.browserContextId)?.browserContextId;
    await cdp.send("Browser.grantPermissions", { origin, browserContextId, permissions });
    await page.close();
  }
  return context;
}

/** Opens a page, waits until it says measuring (then runs `during`), ok or error; returns its dataset. */
async function visit(url, shot, { permissions = ["localNetwork"], during } = {}) {
  const context = await contextWith(new URL(url).origin, permissions);
  try {
    const page = await context.newPage();
    await page.goto(url);
    if (during) {
      await page.waitForFunction(() => ["measuring", "error"].includes(document.body.dataset.state), null, { timeout: 20000 });
      await during();
      // The page waits (?hold) until the test's own traffic is over.
      await page.evaluate(() => window.resume?.());
    }
    await page.waitForFunction(() => ["ok", "error"].includes(document.body.dataset.state), null, { timeout: 20000 });
    const state = await page.evaluate(() => ({ ...document.body.dataset, status: document.getElementById("status").textContent }));
    await page.screenshot({ path: `${out}/${shot}.png`, fullPage: true });
    return state;
  } finally {
    await context.close();
  }
}

await test("central mode: the page finds its box through the locator, gets a token through its backend from the authority, reads the card, streams the counters", async () => {
  const s = await visit("http://localhost:8000/", "central-mode");
  assert.equal(s.state, "ok", s.status);
  assert.equal(s.mode, "central");
  assert.equal(s.technology, "ftth");
  assert.equal(s.source, "stream");
});

await test("box mode: the page relays its backend's assertion to the box's token endpoint", async () => {
  const s = await visit("http://localhost:8002/", "box-mode");
  assert.equal(s.state, "ok", s.status);
  assert.equal(s.mode, "box");
  assert.equal(s.technology, "ftth");
});

await test("without the local-network permission: BlockedByBrowser, diagnosed as the permission", async () => {
  const s = await visit("http://localhost:8000/", "lna-denied", { permissions: [] });
  assert.equal(s.state, "error");
  assert.equal(s.error, "BlockedByBrowser", s.status);
  assert.equal(s.reason, "local-network-permission", s.status);
});

await test("the loopback permission (loopbackNetwork) does not unlock a box on the LAN; localNetwork does", async () => {
  const s = await visit("http://localhost:8002/", "lna-loopback-only", { permissions: ["loopbackNetwork"] });
  assert.equal(s.error, "BlockedByBrowser", s.status);
});

await test("an origin no box registered: BlockedByBrowser diagnosed as CORS (origin_not_allowed never reaches a page)", async () => {
  const s = await visit("http://localhost:8001/", "foreign-origin");
  assert.equal(s.error, "BlockedByBrowser", s.status);
  assert.equal(s.reason, "cors", s.status);
});

await test("a withheld section: the card says it is not shared, the rest is read", async () => {
  ctl("central.sock", "withhold", "wifi", "--tool", "demo");
  try {
    const s = await visit("http://localhost:8000/", "withheld");
    assert.equal(s.state, "ok", s.status);
    assert.equal(s.withheld, "wifi");
    assert.equal(s.technology, "ftth");
  } finally {
    ctl("central.sock", "allow", "wifi", "--tool", "demo");
  }
});

await test("a suspended box: discovery's 503 is a RetryAfter with the operator's delay", async () => {
  ctl("central.sock", "suspend", "--retry-after", "9");
  try {
    const s = await visit("http://localhost:8000/", "suspended");
    assert.equal(s.error, "RetryAfter", s.status);
    assert.equal(s.code, "suspended");
    assert.equal(s.retryAfter, "9");
    assert.match(s.url, /^https:\/\/localhost:\d+\/\.well-known\/oauth-authorization-server$/, "e.url is the box's");
  } finally {
    ctl("central.sock", "resume");
  }
});

// The guide's table of which error each mode and path gives (docs/tool-developers.md, Errors).
for (const [where, sock, url, checkUrl] of [
  ["at the box (box mode): the box drops CORS for it", "box.sock", "http://localhost:8002/", null],
  ["at the authority, through the locator: CORS fails at /v1/locate", "authority.sock", "http://localhost:8000/", /^https:\/\/localhost:\d+\/v1\/locate$/],
]) {
  await test(`a tool revoked ${where}: BlockedByBrowser diagnosed cors, not ToolNotValid`, async () => {
    ctl(sock, "revoke", "demo");
    try {
      const s = await visit(url, `revoked-${sock.replace(".sock", "")}`);
      assert.equal(s.error, "BlockedByBrowser", s.status);
      assert.equal(s.reason, "cors", s.status);
      if (checkUrl) assert.match(s.url, checkUrl, "e.url is the locator's");
    } finally {
      ctl(sock, "unrevoke", "demo");
    }
  });
}

await test("a suspended authority, through the locator: RetryAfter suspended, like a suspended box, told apart by its url", async () => {
  ctl("authority.sock", "suspend", "--retry-after", "7");
  try {
    const s = await visit("http://localhost:8000/", "authority-suspended");
    assert.equal(s.error, "RetryAfter", s.status);
    assert.equal(s.code, "suspended");
    assert.equal(s.retryAfter, "7");
    assert.match(s.url, /^https:\/\/localhost:\d+\/v1\/locate$/, "e.url is the locator's");
  } finally {
    ctl("authority.sock", "resume");
  }
});

await test("an expired tool: the authority issues, the box refuses with reason tool_not_valid, the page has ToolNotValid", async () => {
  const s = await visit("http://localhost:8003/", "expired-tool");
  assert.equal(s.error, "ToolNotValid", s.status);
  assert.equal(s.reason, "tool_not_valid");
});

await test("a second stream from the same terminal: the page falls back to polling and still measures", async () => {
  const ca = readFileSync(`${work}/ca.pem`, "utf8");
  const other = await connect({ box: `https://localhost:${boxPort}`, token: async () => ({ access_token: token }), fetch: fetchTrusting(ca) });
  const held = other.counters({ intervalMs: 500 })[Symbol.asyncIterator]();
  assert.equal((await held.next()).value.source, "stream");
  try {
    const s = await visit("http://localhost:8000/", "second-stream");
    assert.equal(s.state, "ok", s.status);
    assert.equal(s.source, "poll");
  } finally {
    await held.return();
  }
});

await test("cross-traffic: what the test downloads through the box's WAN side (lo) while the page measures is cross-traffic", async () => {
  const cross = 20_000_000;
  const server = createServer((_, res) => res.end(Buffer.alloc(cross)));
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const download = () => new Promise((ok, fail) => {
    request({ host: "127.0.0.1", port: server.address().port }, (res) => res.on("data", () => {}).on("end", ok)).on("error", fail).end();
  });
  try {
    const s = await visit("http://localhost:8000/?bytes=2000000&hold", "cross-traffic", { during: download });
    assert.equal(s.state, "ok", s.status);
    assert.equal(Number(s.own), 2_000_000);
    assert.ok(Number(s.wan) >= 2_000_000 + cross, `wan ${s.wan}`);
    assert.ok(Number(s.cross) >= cross, `cross ${s.cross} >= ${cross}`);
  } finally {
    server.close();
  }
});

// A page (:8006) that connects to the box it is given and shows what the library diagnosed.
const diagnosing = createServer((req, res) => {
  if (servePageModule(req, res)) return;
  const box = new URL(req.url, "http://x").searchParams.get("box");
  res.writeHead(200, { "content-type": "text/html" }).end(`<!doctype html>
<script type="importmap">{ "imports": { "boxapi-client": "/boxapi-client/index.js" } }</script>
<script type="module">import { connect } from "boxapi-client";
connect({ box: ${JSON.stringify(box)}, backend: "/none" }).then(() => (document.body.dataset.state = "ok"),
  (e) => Object.assign(document.body.dataset, { state: "error", error: e.name, reason: e.reason, permissions: JSON.stringify(e.permissions) }));</script>`);
});
await new Promise((ok) => diagnosing.listen(8006, "127.0.0.1", ok));
for (const [what, box] of [
  ["a box that is down", `https://down.box.test:${downPort}`],
  ["a certificate not for the box's name", `https://wrong-name.box.test:${boxPort}`],
]) {
  await test(`local network granted, ${what}: diagnosed network-or-certificate, not the permission`, async () => {
    const context = await contextWith("http://localhost:8006", ["localNetwork"]);
    try {
      const page = await context.newPage();
      await page.goto(`http://localhost:8006/?box=${encodeURIComponent(box)}`);
      await page.waitForFunction(() => ["ok", "error"].includes(document.body.dataset.state), null, { timeout: 20000 });
      const s = await page.evaluate(() => ({ ...document.body.dataset }));
      assert.equal(s.error, "BlockedByBrowser", JSON.stringify(s));
      assert.equal(s.reason, "network-or-certificate", JSON.stringify(s));
      assert.equal(JSON.parse(s.permissions)["local-network"], "granted", s.permissions);
    } finally {
      await context.close();
    }
  });
}
diagnosing.close();

// Another site (127.0.0.1:8005) embedding the tool page (localhost:8000) in an iframe: the
// local-network grant belongs to the top-level site, and the frame is delegated the feature by
// its allow attribute (local-network, or the alias local-network-access). Chromium 156 let a
// frame without the attribute use the top-level grant too: not asserted, the guide says delegate.
const embedder = createServer((req, res) => {
  const allow = new URL(req.url, "http://x").searchParams.get("allow");
  res.writeHead(200, { "content-type": "text/html" });
  res.end(`<!doctype html><iframe ${allow ? `allow="${allow}"` : ""} src="http://localhost:8000/" width="800" height="600"></iframe>`);
});
await new Promise((ok) => embedder.listen(8005, "127.0.0.1", ok));
async function embedded(allow, grantTo) {
  const context = await contextWith(grantTo, ["localNetwork"]);
  try {
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:8005/?allow=${allow}`);
    const frame = page.frames().find((f) => f.url().startsWith("http://localhost:8000/")) ?? (await page.waitForEvent("frameattached"));
    await frame.waitForFunction(() => ["ok", "error"].includes(document.body.dataset.state), null, { timeout: 20000 });
    return await frame.evaluate(() => ({ ...document.body.dataset }));
  } finally {
    await context.close();
  }
}
for (const allow of ["local-network", "local-network-access"]) {
  await test(`an iframe with allow="${allow}" uses the top-level site's grant`, async () => {
    const s = await embedded(allow, "http://127.0.0.1:8005");
    assert.equal(s.state, "ok", s.error);
    assert.equal(s.technology, "ftth");
  });
}
await test("a grant to the framed tool's own origin does not reach it inside another site", async () => {
  const s = await embedded("local-network", "http://localhost:8000");
  assert.equal(s.error, "BlockedByBrowser");
});
embedder.close();

await runGuide({ test, contextWith, ctl, out });

await browser.close();
for (const r of results) console.log(r);
const failed = results.filter((r) => r.startsWith("FAIL")).length;
console.log(`playwright: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
