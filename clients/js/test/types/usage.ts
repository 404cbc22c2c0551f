// Compiled (never run) by tests/e2e/run.sh with tsc --strict: the TypeScript declarations describe
// what the guide and the example use. A wrong declaration fails the compilation.
import { BlockedByBrowser, BoxApiError, NoTokenEndpoint, RetryAfter, ScopeError, ToolNotValid, connect, counterDelta, type Card, type CrossTrafficResult } from "boxapi-client";
import { Tool, errorFromResponse, mintAssertion, retryAfterSeconds, servePageModule, type PrivateJwk, type TokenResponse } from "boxapi-client/node";
import type { IncomingMessage, ServerResponse } from "node:http";

export async function page(): Promise<string> {
  const box = await connect({ locator: "https://auth.isp.example", backend: "/boxapi/token" });
  const mode: "box" | "central" = box.mode;
  const card: Card = await box.card();
  const technology: string | undefined = card.isWithheld("access") ? undefined : card.access?.technology;
  for await (const sample of box.counters({ intervalMs: 250 })) {
    const rx: number | undefined = sample.wan?.rx_bytes;
    const source: "stream" | "poll" = sample.source;
    if (rx !== undefined && source) break;
  }
  const traffic = box.crossTraffic({ direction: "down" });
  await traffic.start();
  const r: CrossTrafficResult = await traffic.stop({ ownBytes: 1, overhead: 0.045 });
  const audience: string | null = box.audience ?? box.discovery.boxapi_audience;
  const delta: number = counterDelta(1, 2, 250_000);
  const own = new BoxApiError("x", { status: 502, code: "bad" });
  try {
    await box.card();
  } catch (e) {
    if (e instanceof BlockedByBrowser) return e.diagnosis;
    if (e instanceof RetryAfter) return `${e.seconds} ${e.reason}`;
    if (e instanceof ToolNotValid) return `${e.expires ?? ""} ${e.revoked}`;
    if (e instanceof ScopeError) return e.code;
    if (e instanceof NoTokenEndpoint) return e.url;
  }
  return `${mode} ${technology} ${r.cross ?? "withheld"} ${card.withheld.join(",")} ${audience} ${delta} ${own.code}`;
}

export async function backend(key: PrivateJwk): Promise<string> {
  const tool = new Tool({ id: "demo", key, authorities: ["https://auth.isp.example"], boxes: ["https://*.box.isp.example"], scope: "access" });
  const token: TokenResponse = await tool.centralToken("https://auth.isp.example/v1/token");
  const answer = await tool.answer({ mode: "box", token_endpoint: "https://k3x9q2.box.isp.example/v1/token" });
  const narrowed: string | undefined = "assertion" in answer ? answer.scope : undefined;
  const refused = await errorFromResponse(new Response("{}", { status: 502 }));
  const wait: number = retryAfterSeconds(new Headers({ "retry-after": "5" }));
  const assertion = await mintAssertion({ jwk: key, toolId: "demo", audience: "https://box.example/v1/token" });
  return token.access_token + ("assertion" in answer ? answer.assertion : answer.access_token) + assertion + narrowed + refused.code + wait;
}

/** An agent on Node: the TokenRequest connect() gives goes to answer() as it is, and AUTHORITY may be unset. */
export async function agent(): Promise<string> {
  const tool = await Tool.fromFile(process.env.TOOL_KEY, { id: "demo", authorities: [process.env.AUTHORITY], boxes: [process.env.BOX_ZONE] });
  const box = await connect({ box: process.env.BOX, token: (request) => tool.answer(request) });
  return box.mode;
}

export function route(req: IncomingMessage, res: ServerResponse): boolean {
  return servePageModule(req, res) || servePageModule(req, res, "/lib/");
}
