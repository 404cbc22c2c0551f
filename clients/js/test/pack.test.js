// `npm pack` makes a package that installs and whose two entry points load, in a project of its own.
import test from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

test("npm pack: an installable package with its types and both entry points", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "boxapi-client-pack-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const here = fileURLToPath(new URL("..", import.meta.url));
  const packed = JSON.parse(execFileSync("npm", ["pack", "--json", "--pack-destination", dir], { cwd: here, encoding: "utf8" }));
  const files = packed[0].files.map((f) => f.path).sort();
  for (const f of ["src/index.js", "src/index.d.ts", "src/node.js", "src/node.d.ts", "src/errors.js", "src/errors.d.ts", "src/counters.js", "package.json"]) {
    assert.ok(files.includes(f), `${f} in ${files}`);
  }
  assert.ok(!files.some((f) => f.startsWith("test/")), "tests are not shipped");
  assert.ok(!files.some((f) => f.startsWith("dev")), "nor the development field (dev.mjs, dev/): it runs the repository's binaries");
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "probe", private: true, type: "module" }));
  execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", join(dir, packed[0].filename)], { cwd: dir, stdio: "ignore" });
  writeFileSync(join(dir, "probe.js"),
    'import { connect, ToolNotValid } from "boxapi-client";\n' +
    'import { Tool, mintAssertion } from "boxapi-client/node";\n' +
    'console.log([typeof connect, typeof ToolNotValid, typeof Tool, typeof mintAssertion].join(","));\n');
  assert.equal(execFileSync("node", ["probe.js"], { cwd: dir, encoding: "utf8" }).trim(), "function,function,function,function");
});
