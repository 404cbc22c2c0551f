// The tool page: get a token from our backend, read the box's card, then follow its counters
// stream during a short transfer and compute the cross-traffic (bytes the box received that were
// not ours).
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

// GET /v1/counters/stream: NDJSON, one /v1/counters object per line, read with fetch and a stream
// reader. next() gives the next line (null once the box ended the stream, after 120 s at most);
// after() waits for a line that the box wrote after this call; stop() closes the connection.
async function openStream(token, intervalMs) {
  const ctrl = new AbortController();
  const r = await fetch(`${cfg.box}/v1/counters/stream?interval_ms=${intervalMs}`, {
    headers: { Authorization: `Bearer ${token}` }, cache: "no-store", signal: ctrl.signal,
  });
  if (!r.ok) {
    const body = await r.json();
    throw Object.assign(new Error(`${r.status} ${body.code}: ${body.detail}`), { problem: body });
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", count = 0, ended = false;
  async function next() {
    for (;;) {
      const i = buf.indexOf("\n");
      if (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        count += 1;
        return JSON.parse(line);
      }
      if (ended) return null;
      const { value, done } = await reader.read().catch(() => ({ done: true }));
      if (done) ended = true; else buf += value;
    }
  }
  async function after() {
    // Everything already received was written before now: skip it, then take the next line.
    const since = performance.now();
    let line;
    do { line = await next(); } while (line && performance.now() - since < intervalMs / 2);
    return line;
  }
  return { next, after, stop: () => ctrl.abort(), count: () => count };
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
  const w = card.client.wifi;
  $("wifi-link").textContent = w == null ? "not Wi-Fi" :
    `${w.band ?? "?"} 802.11${w.standard ?? "?"}, signal ${w.signal_dbm ?? "?"} dBm, ↓ ${mbps(w.rx_kbps)} / ↑ ${mbps(w.tx_kbps)}`;
  $("card").hidden = false;
  status("Measuring cross-traffic…");

  // The box's counters as a stream (one line every 250 ms on one connection); if the box refuses
  // it (an older box: 404; another stream open from this device: 429), poll /v1/counters instead.
  let stream = null;
  try {
    stream = await openStream(tok.access_token, 250);
  } catch (e) {
    document.body.dataset.streamError = e.problem?.code ?? "failed";
  }
  const sample = async () => (stream && (await stream.next())) || box("/v1/counters", tok.access_token);
  const before = await sample();
  const bytes = Number(params.get("bytes") ?? 2_000_000);
  const blob = await (await fetch(`/blob?bytes=${bytes}`, { cache: "no-store" })).arrayBuffer();
  // Lines written during the transfer are waiting in the stream: the sample "after" is the first
  // line the box read once the transfer was over, the newest one a little later.
  const after = await (stream ? stream.after() : sample());
  stream?.stop();
  document.body.dataset.samples = String(stream ? stream.count() : 2);
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
  status(`Done: the box's card was read and its counters ${stream ? "streamed" : "polled"}.`, "ok");
}
main().catch((e) => status(`Error: ${e.message}`, "error"));
