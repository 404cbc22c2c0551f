// Counter arithmetic that needs no network: NDJSON lines out of a byte stream, deltas that
// survive a 32-bit counter wrapping or a reset, and the cross-traffic sums (contract §5, /v1/counters).

const WRAP32 = 2 ** 32;
/** A line of the stream is one /v1/counters object, a few hundred bytes: more is not a line. */
const MAX_LINE = 64 * 1024;

/** The fastest WAN a box has, in bytes per microsecond (10 Gbit/s): a faster "wrap" was a reset. */
const MAX_BYTES_PER_US = 10e9 / 8 / 1e6;

/**
 * Bytes counted between two readings of one counter, `elapsedUs` apart. The box sends the
 * kernel's counters as they are: 64-bit, or 32-bit wrapping at 2^32 on some 32-bit kernels and
 * drivers. A counter that went down wrapped once only if what that implies fits in the time at
 * 10 Gbit/s; otherwise it was reset (a PPPoE reconnection, an interface restarted) and counted
 * `after` since. Without `elapsedUs` a drop is a reset.
 */
export function counterDelta(before, after, elapsedUs = 0) {
  if (after >= before) return after - before;
  const wrapped = after + WRAP32 - before;
  return before < WRAP32 && wrapped <= MAX_BYTES_PER_US * elapsedUs ? wrapped : after;
}

/** The chunks of a ReadableStream, through a reader (Safari's streams are not async-iterable). */
export async function* chunks(stream) {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

/** Splits text chunks (any async iterable) into parsed JSON lines (an async generator). */
export async function* ndjsonLines(textChunks) {
  let buf = "";
  for await (const chunk of textChunks) {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) yield JSON.parse(line);
    }
    if (buf.length > MAX_LINE) throw new Error(`a counters line longer than ${MAX_LINE} bytes`);
  }
  if (buf.trim()) yield JSON.parse(buf);
}

/**
 * Sums what the box counted between samples, sample by sample, so that a counter may wrap more
 * than once over a long test. `direction` "down" counts received bytes (rx), "up" sent bytes (tx).
 */
export class TrafficTotals {
  constructor(direction = "down") {
    if (direction !== "down" && direction !== "up") throw new TypeError('direction is "down" or "up"');
    this.key = direction === "down" ? "rx_bytes" : "tx_bytes";
    this.first = null;
    this.last = null;
    this.wan = 0;
    this.client = 0;
    /** False once a sample lacked `wan` (counters withheld) or `client` (no per-terminal counts). */
    this.wanKnown = true;
    this.clientKnown = true;
    this.samples = 0;
  }

  add(sample) {
    this.samples += 1;
    const prev = this.last;
    this.last = sample;
    if (!prev) {
      this.first = sample;
      this.wanKnown = sample.wan != null;
      this.clientKnown = sample.client != null;
      return;
    }
    const us = sample.monotonic_us - prev.monotonic_us;
    if (sample.wan == null || prev.wan == null) this.wanKnown = false;
    else this.wan += counterDelta(prev.wan[this.key], sample.wan[this.key], us);
    if (sample.client == null || prev.client == null) this.clientKnown = false;
    else this.client += counterDelta(prev.client[this.key], sample.client[this.key], us);
  }

  /**
   * The result: `own` is the box's count of this terminal's bytes when it has one, else
   * `ownBytes` (what the page itself transferred); `cross` = wan - own, never below 0, `null`
   * when the box withholds its counters or no own count is known.
   */
  result(ownBytes) {
    const seconds = this.first && this.last ? (this.last.monotonic_us - this.first.monotonic_us) / 1e6 : 0;
    const wan = this.wanKnown && this.samples > 1 ? this.wan : null;
    const fromBox = this.clientKnown && this.samples > 1;
    const own = fromBox ? this.client : ownBytes ?? null;
    const cross = wan == null || own == null ? null : Math.max(0, wan - own);
    const withheld = [...new Set([...(this.first?.withheld ?? []), ...(this.last?.withheld ?? [])])];
    return { wan, own, cross, seconds, ownFrom: fromBox ? "box" : own == null ? null : "page", samples: this.samples, withheld };
  }
}
