// The tool page, on boxapi-client: find the box, read its card, and measure the cross-traffic
// (bytes the box's WAN received that were not ours) during a download.
import { connect } from "boxapi-client";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const mbps = (kbps) => (kbps == null ? "unknown" : `${(kbps / 1000).toLocaleString()} Mbit/s`);
const rates = (s) => `${mbps(s.down_kbps)} / ${mbps(s.up_kbps)}`;
const radios = (w) => (w.enabled ? w.radios.map((r) => `${r.band} ${r.standard}`).join(", ") : w.enabled ?? "unknown");
const show = (data) => Object.assign(document.body.dataset, data);
function status(state, text) { $("status").textContent = text; show({ state }); }
try {
  const box = await connect({ ...(await (await fetch("/config")).json()), backend: "/boxapi/token" });
  const card = await box.card();
  // A withheld section is null by the subscriber's choice, not because the box does not know it.
  const fill = (id, section, text) => ($(id).textContent = card.isWithheld(section) ? "not shared" : text(card[section]));
  fill("technology", "access", (a) => a.technology);
  fill("subscription", "subscription", rates);
  fill("line", "access", rates);
  fill("connection", "client", (c) => c.connection);
  fill("wifi", "wifi", radios);
  show({ mode: box.mode, technology: card.access?.technology, withheld: card.withheld.join(" ") });
  const x = box.crossTraffic();
  await x.start();
  status("measuring", "Measuring cross-traffic…");
  const blob = await (await fetch(`/blob?bytes=${params.get("bytes") ?? 2e6}`)).arrayBuffer();
  if (params.has("hold")) await new Promise((ok) => (window.resume = ok)); // a test adds traffic, then resumes
  const r = await x.stop({ ownBytes: blob.byteLength });
  $("traffic").textContent = `${r.own} bytes of ours in ${r.seconds.toFixed(2)} s; WAN ${r.wan}; cross-traffic ${r.cross}`;
  show({ source: r.source, wan: r.wan, own: r.own, cross: r.cross });
  status("ok", `Done: the card was read and the counters ${r.source === "stream" ? "streamed" : "polled"}.`);
} catch (e) {
  show({ error: e.name, code: e.code, reason: e.reason, retryAfter: e.seconds ?? "", url: e.url });
  status("error", e.message);
}
