// Real daemons on loopback: a box in central mode, a box in box mode and the operator's authority,
// each the binary cargo built (BOXAPI_TARGET, default <repo>/target/debug), with a development CA
// (certs/make-dev-certs.sh) and tool keys from `boxapi keygen`. The field of the library's tests,
// of tests/e2e (which adds its page origins) and of a tool developer's `node clients/js/dev.mjs`.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { request as httpsRequest, Agent } from "node:https";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";

export const REPO = resolve(fileURLToPath(new URL("../../..", import.meta.url)));
const TARGET = process.env.BOXAPI_TARGET ?? join(REPO, "target/debug");
export const BOX_BIN = join(TARGET, "boxapi");
export const AUTHORITY_BIN = join(TARGET, "boxapi-authority");

/** A port free now on 127.0.0.1 (issuers and origins name ports, so they are chosen before the daemons start). */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/**
 * fetch over node:https trusting `ca` (Node's own fetch reads its extra CAs only at process
 * start), optionally from `localAddress`; network failures are TypeErrors, as fetch's are.
 */
export function fetchTrusting(ca, { localAddress } = {}) {
  const agent = new Agent({ ca, keepAlive: false, localAddress });
  return (input, init = {}) =>
    new Promise((ok, fail) => {
      const headers = Object.fromEntries(new Headers(init.headers ?? {}));
      const req = httpsRequest(new URL(String(input)), { method: init.method ?? "GET", headers, agent, signal: init.signal }, (res) => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) h.set(k, Array.isArray(v) ? v.join(", ") : String(v));
        const empty = res.statusCode === 204 || res.statusCode === 304 || init.method === "HEAD";
        if (empty) res.resume();
        ok(new Response(empty ? null : Readable.toWeb(res), { status: res.statusCode, headers: h }));
      });
      req.on("error", (cause) => fail(new TypeError("fetch failed", { cause })));
      req.end(init.body == null ? undefined : String(init.body));
    });
}

function run(bin, args) {
  return execFileSync(bin, args, { encoding: "utf8" });
}

/** Starts a daemon and waits for its "listening" log line; returns the child process. */
async function start(bin, config, log) {
  const child = spawn(bin, ["serve", "--config", config], { stdio: ["ignore", "ignore", "pipe"] });
  let text = "";
  child.stderr.on("data", (d) => {
    text += d;
    if (log) writeFileSync(log, text);
  });
  const deadline = Date.now() + 20_000;
  while (!text.includes('"event":"listening"')) {
    if (child.exitCode != null) throw new Error(`${bin} exited ${child.exitCode}: ${text}`);
    if (Date.now() > deadline) throw new Error(`${bin} did not start: ${text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  child.logText = () => text;
  return child;
}

const toolToml = ({ id, origins, scopes = ["access", "counters"], key, extra = "" }) =>
  `[[tool]]\nid = "${id}"\norigins = ${JSON.stringify(origins)}\nscopes = ${JSON.stringify(scopes)}\nkeys = ["keys/${key}.jwk"]\n${extra}\n`;

/**
 * The field on loopback. `origins`: the tool page origins to register for "demo" (`lapsedOrigins`:
 * for "lapsed", whose registration expired); `streamSeconds`: how long the boxes' streams last. Returns URLs, keys, the CA and `ctl(box, ...args)`; `stop()`
 * ends it all. The WAN interface of both boxes is `lo`.
 */
export async function startField({ origins = [], lapsedOrigins = ["https://lapsed.example"], streamSeconds = 120, log } = {}) {
  for (const bin of [BOX_BIN, AUTHORITY_BIN]) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run cargo build --workspace first (or set BOXAPI_TARGET)`);
  }
  const dir = mkdtempSync(join(tmpdir(), "boxapi-client-"));
  const children = [];
  const stop = () => {
    for (const c of children) c.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    execFileSync(join(REPO, "certs/make-dev-certs.sh"), [dir], { stdio: "ignore" });
    const keys = join(dir, "keys");
    for (const [kid, alg] of [["demo", "ES256"], ["edtool", "EdDSA"], ["narrow", "ES256"], ["lapsed", "ES256"], ["quota", "ES256"], ["signer", "EdDSA"], ["boxsigner", "EdDSA"]]) {
      run(BOX_BIN, ["keygen", "--alg", alg, "--kid", kid, "--out", keys]);
    }
    writeFileSync(join(dir, "issuer.jwks"), JSON.stringify({ keys: [JSON.parse(readFileSync(join(keys, "signer.jwk"), "utf8"))] }));
    const [central, boxmode, authority, perBoxAuthority, small] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
    const url = {
      central: `https://localhost:${central}`,
      box: `https://localhost:${boxmode}`,
      authority: `https://localhost:${authority}`,
      perBoxAuthority: `https://localhost:${perBoxAuthority}`,
      small: `https://localhost:${small}`,
    };
    const past = "2020-01-01T00:00:00Z";
    const tools = (o) =>
      toolToml({ id: "demo", origins: o, key: "demo" }) +
      toolToml({ id: "edtool", origins: ["https://ed.example"], key: "edtool" }) +
      toolToml({ id: "narrow", origins: ["https://narrow.example"], scopes: ["access"], key: "narrow" }) +
      toolToml({ id: "lapsed", origins: lapsedOrigins, key: "lapsed", extra: `expires = "${past}"` }) +
      toolToml({ id: "quota", origins: ["https://quota.example"], key: "quota", extra: "tokens_per_hour = 2" });
    const server = (port, name, connections = 64) =>
      `[server]\nlisten = ["127.0.0.1:${port}"]\nserver_names = ["localhost"]\ncert = "server.pem"\nkey = "server.key"\n` +
      `state_dir = "${name}-state"\ncontrol_socket = "${name}.sock"\nrate_limit_per_second = 0\nmax_connections = ${connections}\n`;
    const metrics = `[metrics]\nwan_interface = "lo"\nstream_max_seconds = ${streamSeconds}\n[metrics.static]\n` +
      `box = { model = "Test Box", firmware_version = "1.0" }\nsubscription = { down_kbps = 1000000, up_kbps = 500000 }\n` +
      `access = { technology = "ftth", down_kbps = 1244000, up_kbps = 1244000 }\n` +
      `wifi = { enabled = true, radios = [{ band = "5GHz", enabled = true, standard = "ax" }] }\n`;
    // The central-mode box trusts both authorities' signer; its audience is its own URL, as with per-box audiences.
    writeFileSync(join(dir, "central.toml"),
      server(central, "central") +
      `[auth]\naudience = "${url.central}"\nissuers = ["${url.authority}", "${url.perBoxAuthority}"]\nissuer_keys = "issuer.jwks"\n` +
      `central_token_endpoint = "${url.authority}/v1/token"\n` + tools(origins) + metrics);
    writeFileSync(join(dir, "box.toml"),
      server(boxmode, "box") +
      `[auth]\naudience = "${url.box}"\nissuers = ["${url.box}"]\n` +
      `[token_endpoint]\nenabled = true\nissuer = "${url.box}"\nsigning_key = "keys/boxsigner.private.jwk"\n` + tools(origins) + metrics);
    // A box in box mode with room for two streams (half of 4 connections): streams_full.
    writeFileSync(join(dir, "small.toml"),
      server(small, "small", 4) +
      `[auth]\naudience = "${url.small}"\nissuers = ["${url.small}"]\n` +
      `[token_endpoint]\nenabled = true\nissuer = "${url.small}"\nsigning_key = "keys/boxsigner.private.jwk"\n` + tools(origins) + metrics);
    // The authorities know every tool as valid (the boxes' registry is what refuses "lapsed"),
    // and locate 127.0.0.1 (the tests' "subscriber line") to the central-mode box.
    writeFileSync(join(dir, "locate.json"), JSON.stringify({ "127.0.0.1": url.central }));
    const authorityToml = (port, name, perBox) =>
      `[server]\ncert = "server.pem"\nkey = "server.key"\nstate_dir = "${name}-state"\ncontrol_socket = "${name}.sock"\nrate_limit_per_second = 0\n` +
      `[auth]\naudience = "${url.central}"\nissuers = ["${perBox ? url.perBoxAuthority : url.authority}"]\n` +
      `[token_endpoint]\nenabled = true\nissuer = "${perBox ? url.perBoxAuthority : url.authority}"\nsigning_key = "keys/signer.private.jwk"\n` +
      `[authority]\nlisten = ["127.0.0.1:${port}"]\nper_box_audience = ${perBox}\n[authority.locator]\nfile = "locate.json"\n` +
      tools(origins).replace(/expires = "[^"]*"\n/, "");
    writeFileSync(join(dir, "authority.toml"), authorityToml(authority, "authority", false));
    writeFileSync(join(dir, "perbox.toml"), authorityToml(perBoxAuthority, "perbox", true));
    for (const [bin, name] of [[BOX_BIN, "central"], [BOX_BIN, "box"], [BOX_BIN, "small"], [AUTHORITY_BIN, "authority"], [AUTHORITY_BIN, "perbox"]]) {
      children.push(await start(bin, join(dir, `${name}.toml`), log && `${log}-${name}.log`));
    }
    const ca = readFileSync(join(dir, "ca.pem"), "utf8");
    const jwk = (id) => JSON.parse(readFileSync(join(keys, `${id}.private.jwk`), "utf8"));
    const ctl = (name, ...args) => run(BOX_BIN, ["ctl", "--socket", join(dir, `${name}.sock`), ...args]);
    return { dir, url, ca, caFile: join(dir, "ca.pem"), jwk, ctl, fetch: fetchTrusting(ca), stop };
  } catch (e) {
    stop();
    throw e;
  }
}
