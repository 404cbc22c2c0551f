// Runs every snippet of docs/tool-developers.md, so that the guide cannot drift from the library:
// the one ```js backend block is started as the tool's backend (on 127.0.0.1:8004, an origin of
// tool "demo"), each ```js page block runs in Chromium as a module of a page that backend serves,
// each ```js agent block runs under Node in both modes, each ```json block must parse, and every
// js block type-checks with tsc --strict (checkJs). A js block with none of these words fails the
// run. The field is the one `node clients/js/dev.mjs` starts (tests/e2e/daemons.mjs), and the
// snippets get the environment it prints (devEnv). Called by browser.mjs with its helpers.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { devEnv } from "../../clients/js/dev.mjs";

const root = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const GUIDE = "docs/tool-developers.md";
const PORT = 8004;
const KINDS = ["page", "backend", "agent"];
/** What the snippets take as given: the page's globals (the harness below) and the backend's page. */
const GLOBALS = `declare const AUTHORITY: string;
declare function show(name: string, value: unknown): void;
declare function serveYourPage(req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse): void;
`;
const TSCONFIG = {
  compilerOptions: {
    strict: true, noEmit: true, allowJs: true, checkJs: true, module: "nodenext", moduleResolution: "nodenext", target: "es2022",
    lib: ["es2022", "dom", "dom.iterable", "dom.asynciterable"], types: ["node"], typeRoots: [join(root, "tests/e2e/node_modules/@types")],
  },
};

/** The fenced blocks of a Markdown text: language, the other words of the info string, text, line. */
export function blocks(markdown) {
  const lines = markdown.split("\n");
  const found = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^```(\S+)(.*)$/.exec(lines[i]);
    if (!m) continue;
    const end = lines.findIndex((l, j) => j > i && l.trim() === "```");
    if (end < 0) throw new Error(`${GUIDE}:${i + 1}: unclosed block`);
    found.push({ lang: m[1], words: m[2].trim().split(/\s+/).filter(Boolean), text: lines.slice(i + 1, end).join("\n") + "\n", line: i + 1 });
    i = end;
  }
  return found;
}

/**
 * The repository paths a Markdown text names: `code` spans and link targets with a slash whose
 * first segment is a top-level entry of the repository (`docs/openapi.yaml`, `clients/js/`).
 */
export function repositoryPaths(markdown, top = readdirSync(root)) {
  const named = [...markdown.matchAll(/`([^`\s]+)`|\]\(([^)\s#]+)\)/g)].map((m) => m[1] ?? m[2]);
  return [...new Set(named.filter((p) => /^[\w.-]+\/[\w./-]*$/.test(p) && top.includes(p.split("/")[0])))];
}

/** What serveYourPage (the backend snippet's "your page") serves: a page running snippet n, and the library. */
const harness = (authority) => `
import { readFileSync } from "node:fs";
import { servePageModule } from "boxapi-client/node";
const pages = JSON.parse(readFileSync(new URL("./pages.json", import.meta.url), "utf8"));
globalThis.serveYourPage = (req, res) => {
  const url = new URL(req.url, "http://x");
  const n = Number(url.searchParams.get("n") ?? 0);
  if (servePageModule(req, res)) return;
  if (url.pathname === "/snippet.js") return res.writeHead(200, { "content-type": "text/javascript" }).end(pages[n]);
  res.writeHead(200, { "content-type": "text/html" }).end(\`<!doctype html><html><head>
<script type="importmap">{ "imports": { "boxapi-client": "/boxapi-client/index.js" } }</script>
<script>window.AUTHORITY = ${JSON.stringify(authority)}; window.shown = {}; window.show = (k, v) => { shown[k] = String(v); };</script>
<script type="module">import("/snippet.js?n=\${n}").then(() => { document.body.dataset.state = "ok"; },
  (e) => { document.body.dataset.error = String(e?.stack ?? e); document.body.dataset.state = "error"; });</script>
</head><body>guide snippet \${n}</body></html>\`);
};
`;

async function waitForPort(port) {
  for (let i = 0; i < 100; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/boxapi-client/index.js`);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

/** Runs the guide's snippets as tests of browser.mjs (`test`, `contextWith`: its helpers). */
export async function runGuide({ test, contextWith, ctl, out }) {
  const { WORK: work, AUTH_PORT: authPort, BOX_PORT: boxPort, BOX2_PORT: box2Port } = process.env;
  const authority = `https://localhost:${authPort}`;
  const field = { dir: work, url: { authority, box: `https://localhost:${box2Port}` } };
  const text = readFileSync(join(root, GUIDE), "utf8");
  const all = blocks(text);

  await test(`guide: every repository path ${GUIDE} names exists`, async () => {
    const paths = repositoryPaths(text);
    assert.ok(paths.includes("examples/speedtest/"), JSON.stringify(paths));
    assert.deepEqual(paths.filter((p) => !existsSync(join(root, p))), [], "named but missing");
  });
  const js = all.filter((b) => b.lang === "js");
  const of = (kind) => js.filter((b) => b.words.includes(kind));

  await test(`guide: every js block of ${GUIDE} is run (page, backend or agent) and every json block parses`, async () => {
    const unmarked = js.filter((b) => !b.words.some((w) => KINDS.includes(w)));
    assert.deepEqual(unmarked.map((b) => b.line), [], "js blocks that no test runs");
    assert.equal(of("backend").length, 1, "one backend block: the server the page blocks run against");
    assert.ok(of("page").length >= 2 && of("agent").length >= 1);
    for (const b of all.filter((b) => b.lang === "json")) JSON.parse(b.text);
    const other = all.filter((b) => !["js", "json"].includes(b.lang));
    assert.deepEqual(other.map((b) => `${b.line}: ${b.lang}`), [], "blocks of a language no test runs");
  });

  // The package as a project installs it: node_modules/boxapi-client is clients/js.
  const dir = mkdtempSync(join(tmpdir(), "boxapi-guide-"));
  mkdirSync(join(dir, "node_modules"));
  symlinkSync(join(root, "clients/js"), join(dir, "node_modules/boxapi-client"));
  writeFileSync(join(dir, "pages.json"), JSON.stringify(of("page").map((b) => b.text)));
  writeFileSync(join(dir, "harness.mjs"), harness(authority));
  writeFileSync(join(dir, "server.mjs"), of("backend")[0]?.text ?? "");
  // The environment dev.mjs prints for each mode, and nothing of the other mode's.
  const inherited = { ...process.env };
  for (const k of ["AUTHORITY", "BOX_ZONE", "BOX"]) delete inherited[k];
  const envFor = (mode) => ({ ...inherited, ...devEnv(field, mode, PORT) });

  await test(`guide: every js block of ${GUIDE} type-checks with tsc --strict (checkJs, typescript of tests/e2e)`, async () => {
    const files = js.map((b, i) => `snippet-${b.line}-${i}.mjs`);
    js.forEach((b, i) => writeFileSync(join(dir, files[i]), b.text));
    writeFileSync(join(dir, "globals.d.ts"), GLOBALS);
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({ ...TSCONFIG, files: ["globals.d.ts", ...files] }));
    try {
      execFileSync(join(root, "tests/e2e/node_modules/.bin/tsc"), ["-p", dir], { encoding: "utf8" });
    } catch (e) {
      assert.fail(`tsc: ${e.stdout}${e.stderr}`);
    }
  });

  // The page blocks find their box through the locator: central mode (the box-mode backend: the agent runs).
  const backend = spawn("node", ["--import", "./harness.mjs", "server.mjs"], { cwd: dir, env: envFor("central"), stdio: ["ignore", "inherit", "inherit"] });
  try {
    await waitForPort(PORT);
    for (const [n, b] of of("page").entries()) {
      const scenario = b.words.find((w) => w.startsWith("scenario="))?.slice("scenario=".length);
      await test(`guide: the page block at line ${b.line}${scenario ? ` (${scenario})` : ""} runs in Chromium against the backend block`, async () => {
        if (scenario === "suspended") ctl("central.sock", "suspend", "--retry-after", "9");
        const context = await contextWith(`http://127.0.0.1:${PORT}`, ["localNetwork"]);
        try {
          const page = await context.newPage();
          await page.goto(`http://127.0.0.1:${PORT}/?n=${n}`);
          await page.waitForFunction(() => ["ok", "error"].includes(document.body.dataset.state), null, { timeout: 20000 });
          const { state, error, shown } = await page.evaluate(() => ({ ...document.body.dataset, shown: window.shown }));
          await page.screenshot({ path: `${out}/guide-${b.line}.png` });
          assert.equal(state, "ok", error);
          const values = Object.values(shown);
          assert.ok(values.length > 0, "the snippet showed something");
          assert.ok(!values.some((v) => /undefined|NaN/.test(v)), JSON.stringify(shown));
          if (scenario === "suspended") assert.match(shown.retry ?? "", /retry in 9 s \(suspended\)/, JSON.stringify(shown));
          else assert.ok(!("refused" in shown || "blocked" in shown), JSON.stringify(shown));
        } finally {
          await context.close();
          if (scenario === "suspended") ctl("central.sock", "resume");
        }
      });
    }
    await test("guide: its first page block without the local-network permission is blocked (the page is public: the override reaches the backend's address)", async () => {
      const context = await contextWith(`http://127.0.0.1:${PORT}`, []);
      try {
        const page = await context.newPage();
        await page.goto(`http://127.0.0.1:${PORT}/?n=0`);
        await page.waitForFunction(() => ["ok", "error"].includes(document.body.dataset.state), null, { timeout: 20000 });
        const { state, error } = await page.evaluate(() => ({ ...document.body.dataset }));
        assert.equal(state, "error");
        assert.match(error ?? "", /BlockedByBrowser/, error);
      } finally {
        await context.close();
      }
    });
    for (const b of of("agent")) {
      for (const [mode, box] of [["central", `https://localhost:${boxPort}`], ["box", field.url.box]]) {
        await test(`guide: the agent block at line ${b.line} runs under Node against the ${mode}-mode box, with dev.mjs's ${mode} environment`, async () => {
          writeFileSync(join(dir, "agent.mjs"), b.text);
          const printed = execFileSync("node", ["agent.mjs"], { cwd: dir, env: { ...envFor(mode), BOX: box }, encoding: "utf8", timeout: 20000 });
          assert.equal(printed.trim(), `${mode} ftth`);
        });
      }
    }
  } finally {
    backend.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}
