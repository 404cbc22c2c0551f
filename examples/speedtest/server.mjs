// A speed-test tool's tiny backend: serves the tool page and mints its 15-minute access tokens
// server to server (ARCEP annex 2 §3). The tool's private key stays here; the page only ever
// sees a token. Node.js, no dependencies.
//
//   BOX_URL=https://localhost:8443 TOOL_ID=demo TOOL_KEY=boxapi-demo/tools/demo.private.jwk \
//   AUDIENCE=https://boxapi.demo ISSUER=https://boxapi.demo/issuer PORT=8000 node server.mjs
// With TLS_CERT and TLS_KEY (PEM files), the page is served over HTTPS, as a real tool's is.
import { createServer } from "node:http";
import { createServer as createTlsServer } from "node:https";
import { createPrivateKey, sign, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const env = (k, d) => process.env[k] ?? d;
const cfg = {
  box: env("BOX_URL", "https://localhost:8443"),
  tool: env("TOOL_ID", "demo"),
  audience: env("AUDIENCE", "https://boxapi.demo"),
  issuer: env("ISSUER", "https://boxapi.demo/issuer"),
  port: Number(env("PORT", "8000")),
  host: env("HOST", "127.0.0.1"),
};
// The tool's own key; TOOL_KEY_DIR/<tool>.private.jwk holds keys of other tools (tests only).
function keyFor(tool) {
  const path = tool === cfg.tool
    ? env("TOOL_KEY", "boxapi-demo/tools/demo.private.jwk")
    : join(env("TOOL_KEY_DIR", "."), `${tool.replace(/[^A-Za-z0-9._-]/g, "")}.private.jwk`);
  const jwk = JSON.parse(readFileSync(path, "utf8"));
  return [jwk, createPrivateKey({ key: jwk, format: "jwk" })];
}
const b64u = (buf) => Buffer.from(buf).toString("base64url");

function mint(tool) {
  const [jwk, key] = keyFor(tool);
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: jwk.alg ?? "ES256", typ: "at+jwt", kid: jwk.kid };
  const claims = {
    iss: cfg.issuer, aud: cfg.audience, client_id: tool, sub: tool,
    scope: "access counters", iat: now, exp: now + 900, jti: b64u(randomBytes(12)),
  };
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claims))}`;
  const sig = header.alg === "EdDSA"
    ? sign(null, Buffer.from(input), key)
    : sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  return `${input}.${b64u(sig)}`;
}

const files = { "/": ["index.html", "text/html"], "/app.js": ["app.js", "text/javascript"] };
const handler = (req, res) => {
  const url = new URL(req.url, "http://x");
  if (files[url.pathname]) {
    const [f, type] = files[url.pathname];
    res.writeHead(200, { "content-type": `${type}; charset=utf-8` });
    return res.end(readFileSync(join(here, f)));
  }
  if (url.pathname === "/config") {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify({ box: cfg.box }));
  }
  if (url.pathname === "/token" && req.method === "POST") {
    // A real tool authenticates its page's session here; the demo hands out tokens. `tool` lets
    // the tests ask for another tool's token (which the box must refuse on this page's origin).
    const tool = url.searchParams.get("tool") ?? cfg.tool;
    res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
    return res.end(JSON.stringify({ access_token: mint(tool), token_type: "Bearer", expires_in: 900 }));
  }
  if (url.pathname === "/assertion" && req.method === "POST") {
    // Box mode (discovery said the box issues tokens): a single-use client assertion (RFC 7523)
    // for the box's token endpoint. The page relays it; the tool's key never leaves this server.
    // A real tool would check `aud` against the boxes it serves.
    const aud = url.searchParams.get("aud") ?? "";
    const [jwk, key] = keyFor(cfg.tool);
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: jwk.alg ?? "ES256", typ: "JWT", kid: jwk.kid };
    const claims = { iss: cfg.tool, sub: cfg.tool, aud, iat: now, exp: now + 60, jti: b64u(randomBytes(12)) };
    const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claims))}`;
    const sig = header.alg === "EdDSA"
      ? sign(null, Buffer.from(input), key)
      : sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
    res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
    return res.end(JSON.stringify({ assertion: `${input}.${b64u(sig)}` }));
  }
  if (url.pathname === "/blob") {
    // The "test transfer": N bytes the page downloads while it watches the box's counters.
    const n = Math.min(Number(url.searchParams.get("bytes") ?? 1e6), 50e6);
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": n, "cache-control": "no-store" });
    return res.end(Buffer.alloc(n));
  }
  res.writeHead(404).end();
};
const tls = process.env.TLS_CERT
  ? { cert: readFileSync(process.env.TLS_CERT), key: readFileSync(process.env.TLS_KEY) }
  : null;
(tls ? createTlsServer(tls, handler) : createServer(handler)).listen(cfg.port, cfg.host, () =>
  console.log(`tool page on ${tls ? "https" : "http"}://${cfg.host}:${cfg.port}/ (box ${cfg.box})`));
