// make bench (bench/tokens.sh): writes COUNT token-request bodies, one per line, each with a fresh
// client assertion (RFC 7523: iss = sub = TOOL, aud = AUD, a unique jti, 5 minutes) signed with
// KEY (a private JWK from `boxapi keygen`). Signed ahead of time so that the load client (wrk)
// spends nothing on signing and every server gets the same kind of request.
//   KEY=… TOOL=… AUD=… COUNT=… OUT=…
import { createPrivateKey, sign, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";

const jwk = JSON.parse(readFileSync(process.env.KEY, "utf8"));
const key = createPrivateKey({ key: jwk, format: "jwk" });
const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
const header = b64({ alg: jwk.alg, kid: jwk.kid, typ: "JWT" });
const tool = process.env.TOOL;
const now = Math.floor(Date.now() / 1000);
const lines = [];
for (let i = 0; i < Number(process.env.COUNT); i++) {
  const payload = b64({ iss: tool, sub: tool, aud: process.env.AUD, iat: now, exp: now + 300, jti: randomUUID() });
  const input = `${header}.${payload}`;
  const alg = jwk.alg === "ES256" ? "sha256" : null;
  const sig = sign(alg, Buffer.from(input), { key, dsaEncoding: "ieee-p1363" }).toString("base64url");
  lines.push(
    "grant_type=client_credentials&scope=access+counters" +
    "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer" +
    `&client_assertion=${input}.${sig}`,
  );
}
writeFileSync(process.env.OUT, lines.join("\n") + "\n");
