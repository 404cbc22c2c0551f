export * from "./errors.js";

export type Section = "box" | "subscription" | "access" | "wifi" | "client" | "counters";

export interface Discovery {
  issuer: string;
  token_endpoint: string | null;
  boxapi_mode: "box" | "central";
  /** The audience of this box's tokens; null when the box does not announce one. */
  boxapi_audience: string | null;
  scopes_supported: string[];
  [member: string]: unknown;
}

/** What the library asks the tool's backend for. */
export interface TokenRequest {
  mode: "box" | "central";
  /** Discovery's token_endpoint: the box's own (box mode) or the operator's authority (central). */
  tokenEndpoint: string | null;
  audience: string | null;
  box: string;
}

/** The backend's answer: a token (central mode, server to server), or an assertion the page relays to tokenEndpoint. */
export type TokenAnswer =
  | { access_token: string; expires_in?: number; token_type?: string; scope?: string }
  /** `scope`: sent with the assertion, to narrow the grant (Tool's `scope`). */
  | { assertion: string; scope?: string };

export interface ConnectOptions {
  /** The box's URL, when known (e.g. "https://k3x9q2….box.isp.example"). */
  box?: string;
  /** The operator's authority, whose GET /v1/locate names the box of the line this page runs on. */
  locator?: string;
  /** The tool backend's token route (POST, JSON), as boxapi-client/node's Tool.handle answers it. */
  backend?: string;
  /** Or a callback of your own. */
  token?: (request: TokenRequest) => Promise<TokenAnswer>;
  fetch?: typeof fetch;
}

export interface Counters {
  timestamp: string;
  monotonic_us: number;
  wan: { rx_bytes: number; tx_bytes: number } | null;
  client: { rx_bytes: number; tx_bytes: number } | null;
  withheld?: Section[];
  /** Added by the library: where this sample came from. */
  source: "stream" | "poll";
}

export interface Card {
  api_version: string;
  timestamp: string;
  box: { model: string | null; firmware_version: string | null } | null;
  subscription: { down_kbps: number | null; up_kbps: number | null } | null;
  access: { technology: string; down_kbps: number | null; up_kbps: number | null } | null;
  wifi: { enabled: boolean | null; radios: Array<Record<string, unknown>> } | null;
  client: {
    connection: "ethernet" | "wifi" | "unknown";
    interface: string | null;
    link_kbps: number | null;
    wifi: Record<string, unknown> | null;
  } | null;
  counters: { monotonic_us: number; wan: { rx_bytes: number; tx_bytes: number } } | null;
  /** Sections the subscriber does not share (always a list). */
  withheld: Section[];
  /** True when `section` is null because the subscriber withholds it (not because the box does not know). */
  isWithheld(section: Section): boolean;
  [member: string]: unknown;
}

export interface CountersOptions {
  /** 100 to 10,000 (default 250). */
  intervalMs?: number;
  signal?: AbortSignal;
  /** "auto": poll when no stream can be had (default); "never": throw; "always": poll only. */
  poll?: "auto" | "never" | "always";
}

export interface CrossTrafficResult {
  /** Bytes the box's WAN side counted (rx downloading, tx uploading); null when withheld. */
  wan: number | null;
  /** This terminal's bytes: the box's count when it has one (ownFrom "box"), else ownBytes ("page"). */
  own: number | null;
  /** max(0, wan - own); null when wan or own is unknown. */
  cross: number | null;
  /** Between the first and the last reading, by the box's monotonic clock. */
  seconds: number;
  ownFrom: "box" | "page" | null;
  source: "stream" | "poll";
  samples: number;
  withheld: Section[];
}

export class CrossTraffic {
  /** Reads the first sample (opening the stream, or polling). */
  start(): Promise<Counters>;
  /**
   * Ends the stream and reads the counters once more. `ownBytes`: what the page itself
   * transferred (payload); `overhead`: the fraction headers add on the wire (about 0.045 for TCP
   * over IPv4 and Ethernet, more over PPPoE), which the box counts: without it (default 0) `cross`
   * includes that much of the page's own traffic. Rethrows a failure of the sampling loop.
   */
  stop(options?: { ownBytes?: number; overhead?: number }): Promise<CrossTrafficResult>;
}

export class Box {
  readonly url: string;
  readonly discovery: Discovery;
  readonly mode: "box" | "central";
  readonly tokenEndpoint: string | null;
  /** Discovery's boxapi_audience: the audience of this box's tokens. */
  readonly audience: string | null;
  /** Why the last counters() fell back to polling (RetryAfter with reason stream_open / streams_full, or a 404), else null. */
  streamRefusal: import("./errors.js").BoxApiError | null;
  token(options?: { fresh?: boolean }): Promise<string>;
  get(path: string, options?: { signal?: AbortSignal }): Promise<Response>;
  card(): Promise<Card>;
  countersOnce(options?: { signal?: AbortSignal }): Promise<Counters>;
  counters(options?: CountersOptions): AsyncGenerator<Counters, void, undefined>;
  crossTraffic(options?: { intervalMs?: number; direction?: "down" | "up"; poll?: "auto" | "never" | "always"; onSample?: (sample: Counters, sofar: CrossTrafficResult) => void }): CrossTraffic;
}

export const DISCOVERY_PATH: string;
/** RFC 7523's client_assertion_type, which a relayed assertion is sent with. */
export const ASSERTION_TYPE: string;
export function connect(options: ConnectOptions): Promise<Box>;
export function locate(authority: string, options?: { fetch?: typeof fetch }): Promise<string>;
export function backendTokens(url: string, options?: { fetch?: typeof fetch }): (request: TokenRequest) => Promise<TokenAnswer>;
/**
 * Bytes between two readings of one counter `elapsedUs` apart: a drop is a 32-bit wrap if that
 * fits 10 Gbit/s in the time, else a reset (counted from 0); without elapsedUs, a reset.
 */
export function counterDelta(before: number, after: number, elapsedUs?: number): number;
export class TrafficTotals {
  constructor(direction?: "down" | "up");
  add(sample: Counters): void;
  result(ownBytes?: number): Omit<CrossTrafficResult, "source">;
}
