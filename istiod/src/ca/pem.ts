/** One decoded PEM block: its label (`CERTIFICATE`, `PRIVATE KEY`…) and DER bytes. */
export interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/=\s]*$/;

/**
 * Every PEM block in `text`, in order. Text between blocks is ignored (OpenSSL writes a textual
 * dump before the block), but a block whose END label differs from its BEGIN label, or whose body
 * is not base64, throws: a half-valid file is a mistake worth reporting, not skipping.
 */
export function decodePem(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const [, label = '', body = '', endLabel] = m;
    if (label !== endLabel) throw new Error(`pem block "BEGIN ${label}" ends with "END ${endLabel}"`);
    // RFC 7468 allows headers only in legacy encrypted keys, which istiod does not read.
    if (!BASE64_BODY.test(body)) throw new Error(`pem block "${label}" has a body that is not base64`);
    const der = Buffer.from(body.replace(/\s+/g, ''), 'base64');
    if (der.length === 0) throw new Error(`pem block "${label}" is empty`);
    blocks.push({ label, der });
  }
  return blocks;
}

/** DER as one PEM block with 64-column lines, ending in "\n" (the form Istio sends in `cert_chain`). */
export function encodePem(der: Uint8Array, label: string): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** The DER of every `CERTIFICATE` block; throws when there is none or another kind of block. */
export function decodeCertificates(text: string, what: string): Buffer[] {
  const blocks = decodePem(text);
  if (blocks.length === 0) throw new Error(`${what} holds no PEM certificate`);
  for (const b of blocks) {
    if (b.label !== 'CERTIFICATE')
      throw new Error(`${what} holds a "${b.label}" block, expected only CERTIFICATE`);
  }
  return blocks.map((b) => b.der);
}
