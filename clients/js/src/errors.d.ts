/** Every refusal or failure boxapi-client reports. */
export class BoxApiError extends Error {
  constructor(
    message: string,
    options?: { status?: number; code?: string; reason?: string; detail?: string; body?: Record<string, unknown> | null; url?: string; cause?: unknown },
  );
  /** HTTP status (0: no answer reached the client). */
  status: number;
  /** The problem's `code`, the OAuth `error`, or `blocked_by_browser`, `http_<status>`. */
  code: string;
  /** The problem's `reason` (contract §6 rev. 3): `tool_not_valid`, `tool_revoked`, `stream_open`, `streams_full`; for BlockedByBrowser the diagnosis. */
  reason: string;
  /** The problem's `detail` or the OAuth `error_description`. */
  detail: string;
  /** The refusal's JSON body, as received. */
  body: Record<string, unknown> | null;
  url: string;
}

export type Diagnosis = "cors" | "local-network-permission" | "network-or-certificate" | "certificate" | "unreachable" | "unknown";

/** The browser stopped the request before any answer reached the page (fetch's TypeError). */
export class BlockedByBrowser extends BoxApiError {
  /** The library's inference from what a page can observe (a no-cors probe, the Permissions API). */
  diagnosis: Diagnosis;
  /** State of each local-network permission this browser knows ("granted" | "denied" | "prompt"). */
  permissions: Partial<Record<"local-network" | "loopback-network" | "local-network-access", PermissionState>>;
}

/** The tool is outside its registered period, or revoked: a new token will not help. */
export class ToolNotValid extends BoxApiError {
  revoked: boolean;
  /** RFC 3339, or null (unbounded, or not said by a token endpoint). */
  notBefore: string | null;
  expires: string | null;
}

/** A scope the tool is not registered for: 403 insufficient_scope (API) or 400 invalid_scope (token endpoint). */
export class ScopeError extends BoxApiError {}

/** Try again after `seconds`: suspended (503), rate_limited (429, reason stream_open / streams_full), slow_down (token quota), temporarily_unavailable. */
export class RetryAfter extends BoxApiError {
  seconds: number;
}

/** Any other refusal (invalid_token after a fresh token, invalid_client, box_not_found, invalid_target, authority_not_allowed, …). */
export class Refused extends BoxApiError {}

/** The box's discovery announces no token endpoint (token_endpoint null): configured for neither mode; code no_token_endpoint. */
export class NoTokenEndpoint extends Refused {
  constructor(url?: string);
}

/** The typed error for a refused answer (problem+json or OAuth error body). */
export function errorFor(status: number, body: unknown, headers?: { get(name: string): string | null }, url?: string): BoxApiError;
