// The tool page: get a token from our backend, read the box's card, then poll its counters
// during a short transfer and compute the cross-traffic (bytes the box received that were not ours).
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const mbps = (kbps) => (kbps == null ? "unknown" : `${(kbps / 1000).toLocaleString()} Mbit/s`);
const fmt = (n) => `${n.toLocaleString()} bytes`;
function status(text, cls = "") { $("status").textContent = text; $("status").className = cls; document.body.dataset.state = cls || "running"; }

async function box(path, token) {
  // A call to a device on the local network: Chrome 142+ asks the user for "local network
  // access" when this page's origin is public; without it the fetch fails (TypeError).
  const r = await fetch(cfg.box + path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw Object.assign(new Error(`${r.status} ${body.code}: ${body.detail}`), { problem: body });
  return body;
}

// Where tokens come from: the box itself, or the operator's central server (our backend gets
// those for us, server to server).
async function getToken() {
  const disco = await (await fetch(cfg.box + "/.well-known/oauth-authorization-server", { cache: "no-store" })).json();
  document.body.dataset.mode = disco.boxapi_mode;
  if (disco.boxapi_mode === "box") {
    const { assertion } = await (await fetch(`/assertion?aud=${encodeURIComponent(disco.token_endpoint)}`, { method: "POST" })).json();
    const r = await fetch(disco.token_endpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "client_credentials",
        client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion: assertion,
      }),
    });
    const body = await r.json();
    if (!r.ok) throw Object.assign(new Error(`token: ${body.error}: ${body.error_description}`), { problem: { code: body.error } });
    return body;
  }
  const tool = params.get("tool");
  return (await fetch("/token" + (tool ? `?tool=${encodeURIComponent(tool)}` : ""), { method: "POST" })).json();
}

let cfg;
async function main() {
  cfg = await (await fetch("/config")).json();
  let card, tok;
  try {
    tok = await getToken();
    card = await box("/v1/access", tok.access_token);
  } catch (e) {
    document.body.dataset.code = e.problem?.code ?? "blocked";
    return status(e.problem ? `The box refused: ${e.message}` : `The browser blocked the request to the box (${e.message})`, "error");
  }
  $("technology").textContent = card.access.technology;
  $("subscription").textContent = `${mbps(card.subscription.down_kbps)} / ${mbps(card.subscription.up_kbps)}`;
  $("line").textContent = `${mbps(card.access.down_kbps)} / ${mbps(card.access.up_kbps)}`;
  $("connection").textContent = card.client.connection + (card.client.interface ? ` (${card.client.interface})` : "");
  $("wifi").textContent = card.wifi.enabled == null ? "unknown" : card.wifi.enabled ? `on, ${card.wifi.radios.map((r) => `${r.band} ${r.standard}`).join(", ")}` : "off";
  $("card").hidden = false;
  status("Measuring cross-traffic…");

  const before = await box("/v1/counters", tok.access_token);
  const bytes = Number(params.get("bytes") ?? 2_000_000);
  const blob = await (await fetch(`/blob?bytes=${bytes}`, { cache: "no-store" })).arrayBuffer();
  const after = await box("/v1/counters", tok.access_token);
  // Counters may be 32-bit on some boxes: deltas modulo 2^32 when a value went backwards.
  const delta = (a, b) => (b >= a ? b - a : b + 2 ** 32 - a);
  const wan = delta(before.wan.rx_bytes, after.wan.rx_bytes);
  const ours = before.client && after.client ? delta(before.client.rx_bytes, after.client.rx_bytes) : blob.byteLength;
  const seconds = (after.monotonic_us - before.monotonic_us) / 1e6;
  $("test-bytes").textContent = `${fmt(blob.byteLength)} in ${seconds.toFixed(2)} s`;
  $("wan-bytes").textContent = fmt(wan);
  $("cross").textContent = fmt(Math.max(0, wan - ours));
  $("traffic").hidden = false;
  document.body.dataset.technology = card.access.technology;
  status("Done: the box's card was read and its counters polled.", "ok");
}
main().catch((e) => status(`Error: ${e.message}`, "error"));
