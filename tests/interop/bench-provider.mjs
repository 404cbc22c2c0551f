// make bench (bench/tokens.sh): oidc-provider (the same setup as interop.mjs) as a token server
// for the token-rate comparison: client_credentials, private_key_jwt, JWT access tokens (ES256)
// for the box's audience, over HTTPS with the same certificate as boxapi-authority. One client per
// key in TOOL_KEYS (comma-separated private JWK paths; the client id is the key's file name
// without ".private.jwk").
//   ISSUER_KEY=… TOOL_KEYS=… AUDIENCE=… PORT=… CERT=… CERT_KEY=…
import Provider from "oidc-provider";
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import https from "node:https";

const read = (p) => JSON.parse(readFileSync(p, "utf8"));
const issuerKey = read(process.env.ISSUER_KEY);
const audience = process.env.AUDIENCE;
const port = Number(process.env.PORT);
const clients = process.env.TOOL_KEYS.split(",").map((path) => {
  const { d, ...pub } = read(path);
  return {
    client_id: basename(path, ".private.jwk"),
    token_endpoint_auth_method: "private_key_jwt",
    token_endpoint_auth_signing_alg: pub.alg,
    jwks: { keys: [pub] },
    grant_types: ["client_credentials"],
    id_token_signed_response_alg: issuerKey.alg,
    response_types: [],
    redirect_uris: [],
  };
});

const provider = new Provider(`https://localhost:${port}`, {
  clients,
  jwks: { keys: [issuerKey] },
  scopes: ["access", "counters"],
  ttl: { ClientCredentials: 900 },
  enabledJWA: {
    idTokenSigningAlgValues: [issuerKey.alg],
    clientAuthSigningAlgValues: ["ES256", "EdDSA"],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: "access counters",
        audience,
        accessTokenTTL: 900,
        accessTokenFormat: "jwt",
        jwt: { sign: { alg: issuerKey.alg } },
      }),
    },
  },
});
https
  .createServer({ cert: readFileSync(process.env.CERT), key: readFileSync(process.env.CERT_KEY) }, provider.callback())
  .listen(port, "127.0.0.1", () => console.log("ready"));
