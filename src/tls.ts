/** TLS material for the federation listener: read, or generate a self-signed development pair. */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { isIP } from "node:net";
import selfsigned from "selfsigned";

export async function generateSelfSignedCertificate(certFile: string, keyFile: string, host: string): Promise<void> {
  const altNames: { type: 2 | 7; value?: string; ip?: string }[] = [{ type: 7, ip: "127.0.0.1" }, { type: 2, value: "localhost" }];
  if (isIP(host)) {
    if (host !== "127.0.0.1") altNames.push({ type: 7, ip: host });
  } else if (host !== "localhost") altNames.push({ type: 2, value: host });
  const pems = await selfsigned.generate([{ name: "commonName", value: host }], {
    keySize: 2048,
    days: 825,
    algorithm: "sha256",
    extensions: [
      { name: "basicConstraints", cA: false },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames },
    ],
  } as Parameters<typeof selfsigned.generate>[1]);
  mkdirSync(dirname(certFile), { recursive: true });
  mkdirSync(dirname(keyFile), { recursive: true });
  writeFileSync(keyFile, pems.private, { mode: 0o600 });
  writeFileSync(certFile, pems.cert);
}

export async function loadTls(
  tls: { certFile: string; keyFile: string; generateIfMissing: boolean },
  host: string,
): Promise<{ cert: Buffer; key: Buffer; generated: boolean }> {
  let generated = false;
  if (!existsSync(tls.certFile) || !existsSync(tls.keyFile)) {
    if (!tls.generateIfMissing) throw new Error(`TLS certificate ${tls.certFile} or key ${tls.keyFile} not found (GATEHOUSE_TLS=files)`);
    await generateSelfSignedCertificate(tls.certFile, tls.keyFile, host);
    generated = true;
  }
  return { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile), generated };
}
