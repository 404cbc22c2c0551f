// Gets an access token from oidc-provider (a certified OpenID provider library, nobody on this
// project wrote it): client_credentials grant, private_key_jwt client authentication, a JWT access
// token for the box's audience (resource indicators). Prints the token.
//   ISSUER_KEY=private JWK the provider signs with   TOOL_KEY=the tool's private JWK
//   AUDIENCE=the box's audience   TOOL_ID=the tool (client) id   PORT=provider port
import Provider from "oidc-provider";
import { SignJWT, importJWK } from "jose";
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";

const read = (p) => JSON.parse(readFileSync(p, "utf8"));
const issuerKey = read(process.env.ISSUER_KEY);
const toolKey = read(process.env.TOOL_KEY);
const { d, ...toolPublic } = toolKey;
const audience = process.env.AUDIENCE;
const clientId = process.env.TOOL_ID;
const port = Number(process.env.PORT ?? 3000);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    token_endpoint_auth_method: "private_key_jwt",
    token_endpoint_auth_signing_alg: toolKey.alg,
    jwks: { keys: [toolPublic] },
    grant_types: ["client_credentials"],
    id_token_signed_response_alg: issuerKey.alg,
    response_types: [],
    redirect_uris: [],
  }],
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

const server = provider.listen(port, "127.0.0.1");
try {
  const assertion = await new SignJWT({})
    .setProtectedHeader({ alg: toolKey.alg, kid: toolKey.kid })
    .setIssuer(clientId).setSubject(clientId).setAudience(`${issuer}/token`)
    .setIssuedAt().setExpirationTime("60s").setJti(randomUUID())
    .sign(await importJWK(toolKey, toolKey.alg));
  const r = await fetch(`${issuer}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "client_credentials",
      scope: "access counters",
      resource: audience,
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      client_assertion: assertion,
    }),
  });
  const body = await r.json();
  if (!r.ok || !body.access_token) {
    console.error("token request failed:", r.status, JSON.stringify(body));
    process.exitCode = 1;
  } else {
    console.log(body.access_token);
  }
} finally {
  server.close();
}
