#!/usr/bin/env node
// Local development for a tool: `node clients/js/dev.mjs [PORT]` (or `make dev-tool`) starts, on
// loopback, a box in box mode, a box in central mode and the operator's authority (with its
// locator), registers tool "demo" for the page origins http://127.0.0.1:PORT and
// http://localhost:PORT (default 8000), and prints the URLs, the CA to trust, the backend's
// environment for each mode and a Chromium command line. Ctrl-C stops it all and removes its files.
// tests/e2e runs the guide's snippets against this same field, with this same environment.
import { X509Certificate, createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(fileURLToPath(new URL("../..", import.meta.url)));

/**
 * The backend's environment for `mode` ("central": tokens from the authority, the page finds its
 * box through the locator; "box": the box-mode box issues tokens, the page is given its URL), as
 * the guide's backend and examples/speedtest/server.mjs read it. `field`: { dir, url }.
 */
export function devEnv(field, mode, port = 8000) {
  const common = { TOOL_ID: "demo", TOOL_KEY: join(field.dir, "keys/demo.private.jwk"), PORT: String(port), NODE_EXTRA_CA_CERTS: join(field.dir, "ca.pem") };
  return mode === "box"
    ? { ...common, BOX_ZONE: field.url.box, BOXES: field.url.box, BOX_URL: field.url.box }
    : { ...common, AUTHORITY: field.url.authority, AUTHORITIES: field.url.authority, LOCATOR: field.url.authority };
}

/** base64 SHA-256 of the first certificate's SubjectPublicKeyInfo in `pem`: Chromium's --ignore-certificate-errors-spki-list. */
export function spkiHash(pem) {
  const der = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(der).digest("base64");
}

/** The field for a page on `port` (`origins`: the "demo" tool's page origins); `startField`'s answer. */
export async function startDev({ port = 8000, origins = [`http://127.0.0.1:${port}`, `http://localhost:${port}`], ...options } = {}) {
  // The release build when there is one (make demo, make test-e2e), else the debug build.
  if (!process.env.BOXAPI_TARGET && existsSync(join(repo, "target/release/boxapi-authority"))) process.env.BOXAPI_TARGET = join(repo, "target/release");
  const { startField } = await import("./dev/field.js");
  return startField({ origins, ...options });
}

/** What a developer needs to know about the running field, as text. */
export function describe(field, port = 8000) {
  const env = (mode) => Object.entries(devEnv(field, mode, port)).map(([k, v]) => `${k}=${v}`).join(" ");
  const p = (name) => new URL(field.url[name]).port;
  const overrides = [`127.0.0.1:${port}=public`, `[::1]:${port}=public`, `127.0.0.1:${p("authority")}=public`, `127.0.0.1:${p("box")}=local`, `127.0.0.1:${p("central")}=local`];
  return `boxapi development field (Ctrl-C stops it; its files: ${field.dir})
  box mode:     ${field.url.box} (issues tokens itself: discovery's token_endpoint is ${field.url.box}/v1/token)
  central mode: ${field.url.central} (tokens from the authority)
  authority:    ${field.url.authority} (/v1/token, and /v1/locate: 127.0.0.1 -> the central-mode box)
  CA to trust:  ${field.caFile} (a certificate for localhost and 127.0.0.1)
  tool "demo" is registered on both boxes and the authority for http://127.0.0.1:${port} and http://localhost:${port}

Your backend (the guide's, or examples/speedtest/server.mjs), one mode at a time:
  central: ${env("central")} node server.mjs
  box:     ${env("box")} node server.mjs
The page: connect({ locator: "${field.url.authority}", backend }) (central), connect({ box: "${field.url.box}", backend }) (box).

Chromium (a throw-away profile that trusts the server certificate, the page public, the boxes on the LAN):
  chromium --user-data-dir=$(mktemp -d) --ignore-certificate-errors-spki-list=${spkiHash(readFileSync(join(field.dir, "server.pem"), "utf8"))} \\
    --ip-address-space-overrides=${overrides.join(",")} http://127.0.0.1:${port}/
`;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] ?? 8000);
  const field = await startDev({ port });
  console.log(describe(field, port));
  const stop = () => (field.stop(), process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
