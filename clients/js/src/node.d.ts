import type { IncomingMessage, ServerResponse } from "node:http";
export * from "./errors.js";

/** A private JWK as `boxapi keygen` writes it (EC P-256 or OKP Ed25519, with `d` and `kid`). */
export interface PrivateJwk {
  kty: "EC" | "OKP";
  crv: "P-256" | "Ed25519";
  kid: string;
  d: string;
  alg?: "ES256" | "EdDSA";
  [member: string]: unknown;
}

/** The typed error for a refused Response (problem+json or an OAuth error body). */
export function errorFromResponse(resp: Response, url?: string): Promise<import("./errors.js").BoxApiError>;
/** Retry-After (seconds or an HTTP date) in whole seconds, or `fallback`. */
export function retryAfterSeconds(headers: { get(name: string): string | null } | undefined, fallback?: number): number;
/** Serves this package's page modules (GET {prefix}index.js, errors.js, counters.js); true when it answered. */
export function servePageModule(req: IncomingMessage, res: ServerResponse, prefix?: string): boolean;

export function mintAssertion(options: { jwk: PrivateJwk; toolId: string; audience: string; lifetime?: number; now?: number }): Promise<string>;

export interface TokenResponse {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  scope: string;
  box_url?: string;
}

export interface ToolOptions {
  id: string;
  key: PrivateJwk;
  /**
   * Origins of the authorities this backend sends assertions to ("https://auth.isp.example").
   * Unset entries (undefined, null, "") are left out: a box-mode backend needs none.
   */
  authorities?: (string | undefined | null)[];
  /**
   * The boxes it makes assertions for in box mode: zones ("https://*.box.isp.example", one label
   * under the zone) or origins ("https://box.example:8443"). Any other token endpoint is refused
   * (Refused, 403 authority_not_allowed).
   */
  boxes?: (string | undefined | null)[];
  /** Scopes to ask for (default: all the tool is registered for). */
  scope?: string;
  fetch?: typeof fetch;
}

export class Tool {
  constructor(options: ToolOptions);
  /** `path` may be process.env's (a TypeError names it when unset). */
  static fromFile(path: string | undefined, options: Omit<ToolOptions, "key">): Promise<Tool>;
  readonly id: string;
  assertion(audience: string): Promise<string>;
  /**
   * POST {authority}/v1/token from this server; refuses an authority not on the allow-list
   * (Refused, code authority_not_allowed). A token without box_url is cached per endpoint and
   * scope until 60 s before it expires (expires_in then says what is left).
   */
  centralToken(tokenEndpoint: string, options?: { scope?: string }): Promise<TokenResponse>;
  /**
   * The answer to the page's request ({ mode, token_endpoint }) or to a TokenRequest as
   * connect({ token }) gives it ({ mode, tokenEndpoint }); an assertion carries the Tool's scope.
   * A null endpoint is a NoTokenEndpoint.
   */
  answer(request: { mode: "box" | "central"; token_endpoint?: string | null; tokenEndpoint?: string | null }): Promise<TokenResponse | { assertion: string; scope?: string }>;
  /** The backend route for node:http: authenticate your user's session first. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
}
