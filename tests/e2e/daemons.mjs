// The field of run.sh: the boxes and authorities a tool developer's `node clients/js/dev.mjs` starts
// (clients/js/dev/field.js, also the library's tests' field), and the example tool's backends on the page origins browser.mjs visits. Prints the
// ports, the field's directory and a token for the central-mode box as shell assignments, then
// runs until SIGTERM. OUT (logs) and BOXAPI_TARGET (the binaries) come from run.sh.
import { execFileSync, spawn } from "node:child_process";
import { openSync } from "node:fs";
import { BOX_BIN, REPO } from "../../clients/js/dev/field.js";
import { startDev } from "../../clients/js/dev.mjs";

const out = process.env.OUT;
// :8004 is the guide's backend (tests/e2e/guide.mjs), on 127.0.0.1 as the guide says.
const field = await startDev({
  origins: ["http://localhost:8000", "http://localhost:8002", "http://127.0.0.1:8004"],
  lapsedOrigins: ["http://localhost:8003"],
  log: `${out}/daemon`,
});
// :8000 finds its box through the authority's locator (central mode), :8001 is an origin no box
// knows, :8002 is on the box that issues tokens, :8003 is the lapsed tool's.
const backends = [
  [8000, "demo", { LOCATOR: field.url.authority }],
  [8001, "demo", { BOX_URL: field.url.central }],
  [8002, "demo", { BOX_URL: field.url.box }],
  [8003, "lapsed", { BOX_URL: field.url.central }],
].map(([port, tool, where]) => {
  const log = openSync(`${out}/tool-${port}.log`, "w");
  const env = { ...process.env, ...where, TOOL_ID: tool, TOOL_KEY: `${field.dir}/keys/${tool}.private.jwk`, PORT: String(port),
    AUTHORITIES: field.url.authority, BOXES: field.url.box, NODE_EXTRA_CA_CERTS: field.caFile };
  return spawn(process.execPath, [`${REPO}/examples/speedtest/server.mjs`], { env, stdio: ["ignore", log, log] });
});
const token = execFileSync(BOX_BIN, ["token", "--key", `${field.dir}/keys/signer.private.jwk`, "--tool", "demo", "--scope", "access counters",
  "--aud", field.url.central, "--iss", field.url.authority], { encoding: "utf8" }).trim();
const port = (name) => new URL(field.url[name]).port;
console.log(`BOX_PORT=${port("central")} BOX2_PORT=${port("box")} AUTH_PORT=${port("authority")} WORK=${field.dir} TOKEN=${token}`);
const stop = () => {
  for (const b of backends) b.kill();
  field.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
