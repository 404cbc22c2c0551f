// Chromium (Playwright, as tests/e2e) on LuCI's own client-side runtime served by uhttpd: the page
// tests/openwrt/luci.py wrote (what LuCI's view.ut renders) boots luci.js, which loads ui, rpc and
// form and then the package's view boxapi/rights, talking to the real /ubus.
// Prints one JSON line per step for luci.py to check.
//   node luci.mjs URL API_PORT SCREENSHOT_DIR
import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../e2e/package.json"));
const { chromium } = require("playwright-core");
const [url, apiPort, shots] = process.argv.slice(2);

let t0 = Date.now();
// Each step's line carries its own time (ms) since the previous one.
const say = (step, v) => { console.log(JSON.stringify({ step, ms: Date.now() - t0, ...v })); t0 = Date.now(); };
const connects = (port) => new Promise((resolve) => {
  const s = net.connect({ host: "127.0.0.1", port: Number(port) });
  s.setTimeout(2000);
  s.on("connect", () => { s.destroy(); resolve(true); });
  s.on("error", () => resolve(false));
  s.on("timeout", () => { s.destroy(); resolve(false); });
});
async function portBecomes(want) {
  for (let i = 0; i < 50; i++) {
    if (await connects(apiPort) === want) return want;
    await new Promise((r) => setTimeout(r, 200));
  }
  return !want;
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage();
const errors = [], ubus = [], replies = [];
try {
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => { if (r.url().includes("/ubus")) ubus.push(r.postData()); });
  page.on("requestfailed", (r) => errors.push(`failed ${r.url()}`));
  page.on("response", async (r) => {
    if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`);
    if (r.url().includes("/ubus")) replies.push(await r.text().catch(() => "?"));
  });

  // What the view shows once rendered: its state line, its button, the tools' rows.
  const view = async () => {
    await page.waitForSelector("#view table", { timeout: 20000 });
    return page.evaluate(() => {
      const v = document.querySelector("#view");
      const rows = [...v.querySelectorAll("table tr")].slice(1).map((tr) =>
        [...tr.querySelectorAll("td")].map((td) => td.innerText.trim()));
      const state = [...v.querySelectorAll("p")].map((p) => p.innerText).find((t) => t.startsWith("State:"));
      const button = v.querySelector("button");
      return { state, button: button && button.innerText.trim(), rows };
    });
  };

  await page.goto(url);
  const first = await view();
  say("loaded", { view: first, luci: await page.evaluate(() => typeof L === "object" && L.env.sessionid.length),
    classes: await page.evaluate(() => Object.keys(L.env).length), errors: [...errors] });
  await page.screenshot({ path: path.join(shots, "luci-on.png"), fullPage: true });

  // Switch off: the view calls boxapi.disable through rpc.js, then reloads itself.
  const before = ubus.length;
  await Promise.all([page.waitForEvent("load"), page.click("#view button")]);
  const off = await view();
  say("off", { view: off, port_open: await portBecomes(false),
    calls: ubus.slice(before).filter((b) => b && b.includes('"disable"')).length });
  await page.screenshot({ path: path.join(shots, "luci-off.png"), fullPage: true });

  // Switch on again.
  await Promise.all([page.waitForEvent("load"), page.click("#view button")]);
  const on = await view();
  say("on", { view: on, port_open: await portBecomes(true) });

  // Untick wifi for the first tool: boxapi.withhold {section: wifi, tool}.
  const box = page.locator("#view table tr").nth(1).locator("label", { hasText: "wifi" }).locator("input");
  await Promise.all([page.waitForEvent("load"), box.uncheck()]);
  await view();
  const ticked = await page.locator("#view table tr").nth(1).locator("label", { hasText: "wifi" })
    .locator("input").isChecked();
  say("withhold", { ticked, calls: ubus.filter((b) => b && b.includes('"withhold"')).map((b) => JSON.parse(b)) });
  say("errors", { errors });
} catch (e) {
  const shown = await page.evaluate(() => document.querySelector("#view")?.innerText).catch(() => null);
  say("crashed", { error: String(e && e.stack || e), errors, view: shown, ubus, replies });
} finally {
  await browser.close();
}
