import type { ZcCert, ZcDump } from './dump.ts';
import { formatTable } from './tabwriter.ts';

function orNA(v: string): string {
  return v === '' ? 'NA' : v;
}

/** istioctl prints the decimal serial as lowercase hex (`%x` of a big.Int), `<nil>` if unparsable. */
function serialHex(serial: string): string {
  if (!/^\d+$/.test(serial)) return '<nil>';
  return BigInt(serial).toString(16);
}

/** Whether now is inside the certificate's validity (false when the times are missing or bad). */
function valid(c: ZcCert, now: number): boolean {
  if (c.expirationTime === '' && c.validFrom === '') return false;
  const from = Date.parse(c.validFrom);
  const to = Date.parse(c.expirationTime);
  if (Number.isNaN(from) || Number.isNaN(to)) return false;
  return now > from && now < to;
}

/**
 * istioctl's certificate summary: CERTIFICATE NAME TYPE STATUS VALID CERT SERIAL NUMBER NOT AFTER
 * NOT BEFORE, one row per certificate: the chain (Leaf, then Intermediate) and then the roots
 * (Root). Without a roots field the last chain entry is the root, as in older dumps. Padding 5, as
 * istioctl's secret writer uses.
 */
export function certificateTable(dump: ZcDump, now = Date.now()): string {
  const rows: string[][] = [
    ['CERTIFICATE NAME', 'TYPE', 'STATUS', 'VALID CERT', 'SERIAL NUMBER', 'NOT AFTER', 'NOT BEFORE'],
  ];
  const row = (identity: string, type: string, state: string, c: ZcCert): string[] => [
    identity,
    type,
    state,
    String(valid(c, now)),
    serialHex(c.serialNumber),
    orNA(c.expirationTime),
    orNA(c.validFrom),
  ];
  for (const secret of dump.certificates) {
    const state = secret.state.includes('Unavailable') ? 'Unavailable' : secret.state;
    if (secret.certChain.length === 0) {
      rows.push([secret.identity, 'NA', state, 'false', 'NA', 'NA', 'NA']);
      continue;
    }
    const legacy = !secret.hasRootField || secret.rootCerts.length === 0;
    secret.certChain.forEach((c, i) => {
      const type = i === 0 ? 'Leaf' : i === secret.certChain.length - 1 && legacy ? 'Root' : 'Intermediate';
      rows.push(row(secret.identity, type, state, c));
    });
    for (const c of secret.rootCerts) rows.push(row(secret.identity, 'Root', state, c));
  }
  return formatTable(rows, 5);
}

/** The certificates section as it is (the `-o json|yaml` view). */
export function selectCertificates(dump: ZcDump): unknown[] {
  return dump.certificates.map((c) => c.raw);
}
