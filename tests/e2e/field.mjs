// The browser proof of contract §10 (run by tests/field/browser.sh inside the LAN namespace):
// Chromium with nothing in its trust store but Pebble's root (the stand-in for the public roots;
// no operator CA, no box CA, no --ignore-certificate-errors) opens a tool page on a
// public-looking origin, which calls https://<label>.<zone>/v1/access and shows the card.
//   BOX_NAME, TOOL_IP, OUT, HOME (NSS DB with Pebble's root only) come from browser.sh.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const { BOX_NAME: name, TOOL_IP: toolIp, OUT: out } = process.env;
const origin = "https://tool.test:8443";
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // The tool's page: a public-looking name (resolved here to the test's tool server) whose
    // address counts as public, as a real tool's would.
    `--host-resolver-rules=MAP tool.test ${toolIp}`,
    `--ip-address-space-overrides=${toolIp}:8443=public`],
});
let failed = 0;
async function test(title, fn) {
  try { await fn(); console.log(`ok   ${title}`); } catch (e) { failed++; console.log(`FAIL ${title}: ${e.message}`); }
}
try {
  await test(`the box's own name has a certificate the browser trusts (https://${name})`, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    // A navigation fails on any certificate error; this one reaches the box, which asks for a token.
    const resp = await page.goto(`https://${name}/v1/access`);
    assert.equal(resp.status(), 401);
    assert.equal((await resp.json()).code, "missing_token");
    await context.close();
  });
  await test("a tool page on a public origin reads the card from the box by its name", async () => {
    const context = await browser.newContext();
    // What the subscriber grants at Chrome's local-network-access prompt.
    await context.grantPermissions(["local-network-access"], { origin });
    const page = await context.newPage();
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => ["ok", "error"].includes(document.body.dataset.state), null, { timeout: 30000 });
    const state = await page.evaluate(() => ({ ...document.body.dataset, status: document.getElementById("status").textContent }));
    await page.screenshot({ path: `${out}/field-browser.png`, fullPage: true });
    assert.equal(state.state, "ok", state.status);
    assert.equal(state.technology, "ftth");
    await context.close();
  });
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
