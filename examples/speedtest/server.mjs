// The tool's backend, on boxapi-client/node: serves the page and answers its token requests (an
// assertion for the box's token endpoint in box mode, a token from an allow-listed operator
// authority in central mode). The tool's private key stays here. Node.js, no dependencies.
//
//   TOOL_ID=demo TOOL_KEY=demo.private.jwk AUTHORITIES=https://auth.isp.example BOXES=https://*.box.isp.example \
//   LOCATOR=https://auth.isp.example (or BOX_URL=https://…) PORT=8000 node server.mjs
// With TLS_CERT and TLS_KEY (PEM files) the page is served over HTTPS, as a real tool's is.
import { createServer } from "node:http";
import { createServer as createTlsServer } from "node:https";
import { readFileSync } from "node:fs";
import { Tool, servePageModule } from "../../clients/js/src/node.js";

const env = process.env;
const list = (v) => (v ?? "").split(",").filter(Boolean);
const tool = await Tool.fromFile(env.TOOL_KEY, { id: env.TOOL_ID, authorities: list(env.AUTHORITIES), boxes: list(env.BOXES) });
const files = { "/": ["index.html", "text/html"], "/app.js": ["app.js", "text/javascript"] };
const handler = (req, res) => {
  const { pathname, searchParams } = new URL(req.url, "http://x");
  // A real tool authenticates its user's session here before handing out tokens.
  if (pathname === "/boxapi/token" && req.method === "POST") return tool.handle(req, res);
  if (pathname === "/config") return res.end(JSON.stringify(env.BOX_URL ? { box: env.BOX_URL } : { locator: env.LOCATOR }));
  if (servePageModule(req, res)) return; // boxapi-client's modules, for the import map
  const [file, type] = files[pathname] ?? [];
  if (file) return res.writeHead(200, { "content-type": type }).end(readFileSync(new URL(file, import.meta.url)));
  // The test transfer: N bytes the page downloads while it watches the box's counters.
  if (pathname === "/blob") return res.writeHead(200, { "cache-control": "no-store" }).end(Buffer.alloc(Math.min(Number(searchParams.get("bytes")) || 0, 50e6)));
  res.writeHead(404).end();
};
const tls = env.TLS_CERT && { cert: readFileSync(env.TLS_CERT), key: readFileSync(env.TLS_KEY) };
(tls ? createTlsServer(tls, handler) : createServer(handler)).listen(Number(env.PORT ?? 8000), env.HOST ?? "127.0.0.1");
