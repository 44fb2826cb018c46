import { DER_TAG, DerReader } from './der.ts';
import { TlsError } from './errors.ts';

// id-ce-subjectAltName, 2.5.29.17, as its DER OID contents.
const SUBJECT_ALT_NAME_OID = Uint8Array.of(0x55, 0x1d, 0x11);
// GeneralName `uniformResourceIdentifier [6] IMPLICIT IA5String`: context-specific, primitive, 6.
const GENERAL_NAME_URI = 0x86;
// TBSCertificate fields between `version` and `extensions`, in order, each a required element.
const TBS_REQUIRED_FIELDS = [
  'serialNumber',
  'signature',
  'issuer',
  'validity',
  'subject',
  'subjectPublicKeyInfo',
];
// issuerUniqueID [1] and subjectUniqueID [2], IMPLICIT BIT STRING: primitive or constructed.
const TBS_UNIQUE_ID_TAGS = new Set([0x81, 0xa1, 0x82, 0xa2]);

/**
 * The URI SANs of a DER certificate (`X509Certificate.raw`, `getPeerCertificate().raw`), in
 * certificate order, decoded from the SubjectAltName extension itself. Node's `subjectaltname`
 * string is never used: it is ambiguous when a name contains `, ` (CVE-2021-44532).
 *
 * Strict: a second SubjectAltName extension, an empty GeneralNames, or a URI that is not
 * printable 7-bit ASCII (NUL, controls, spaces, bytes ≥ 0x80) throws
 * `TlsError('CERTIFICATE_MALFORMED')` rather than being skipped. A certificate without the
 * extension yields `[]`.
 */
export function uriSans(der: Uint8Array): string[] {
  const extension = subjectAltNameValue(der);
  if (extension === undefined) return [];
  const { buf, start, end } = extension;
  const outer = new DerReader(buf, start, end);
  const generalNames = outer.expect(DER_TAG.SEQUENCE, 'GeneralNames');
  outer.expectEnd('GeneralNames');
  const names = DerReader.within(buf, generalNames);
  if (names.done) {
    throw new TlsError('CERTIFICATE_MALFORMED', 'subjectAltName extension has an empty GeneralNames');
  }
  const uris: string[] = [];
  while (!names.done) {
    const name = names.next();
    if (name.tag !== GENERAL_NAME_URI) continue;
    uris.push(ia5String(buf, name.start, name.end));
  }
  return uris;
}

/** Locates the SubjectAltName `extnValue` contents inside a DER certificate. */
function subjectAltNameValue(der: Uint8Array): { buf: Uint8Array; start: number; end: number } | undefined {
  const top = new DerReader(der);
  const certificate = top.expect(DER_TAG.SEQUENCE, 'Certificate');
  top.expectEnd('Certificate');
  const certFields = DerReader.within(der, certificate);
  const tbs = DerReader.within(der, certFields.expect(DER_TAG.SEQUENCE, 'TBSCertificate'));

  if (tbs.peekTag() === DER_TAG.CONTEXT_0_CONSTRUCTED) tbs.next();
  for (const field of TBS_REQUIRED_FIELDS) {
    if (tbs.done) throw new TlsError('CERTIFICATE_MALFORMED', `TBSCertificate ends before ${field}`);
    tbs.next();
  }
  while (!tbs.done && TBS_UNIQUE_ID_TAGS.has(tbs.peekTag() ?? -1)) tbs.next();
  if (tbs.done) return undefined;
  const extensionsWrapper = tbs.expect(DER_TAG.CONTEXT_3_CONSTRUCTED, 'extensions [3]');
  tbs.expectEnd('TBSCertificate');

  const wrapper = DerReader.within(der, extensionsWrapper);
  const extensionList = wrapper.expect(DER_TAG.SEQUENCE, 'Extensions');
  wrapper.expectEnd('extensions [3]');

  const extensions = DerReader.within(der, extensionList);
  let found: { buf: Uint8Array; start: number; end: number } | undefined;
  while (!extensions.done) {
    const ext = DerReader.within(der, extensions.expect(DER_TAG.SEQUENCE, 'Extension'));
    const oid = ext.expect(DER_TAG.OID, 'extnID');
    if (ext.peekTag() === DER_TAG.BOOLEAN) ext.next();
    const value = ext.expect(DER_TAG.OCTET_STRING, 'extnValue');
    ext.expectEnd('Extension');
    if (!bytesEqual(der, oid.start, oid.end, SUBJECT_ALT_NAME_OID)) continue;
    // RFC 5280 §4.2: an extension appears at most once; two SAN lists would let a verifier
    // and a policy engine disagree about who the peer is.
    if (found !== undefined) {
      throw new TlsError('CERTIFICATE_MALFORMED', 'certificate has more than one subjectAltName extension');
    }
    found = { buf: der, start: value.start, end: value.end };
  }
  return found;
}

function ia5String(buf: Uint8Array, start: number, end: number): string {
  let out = '';
  for (let i = start; i < end; i++) {
    const c = buf[i] as number;
    // A URI has no spaces, controls or non-ASCII octets (RFC 3986); IA5 forbids ≥ 0x80 anyway.
    if (c <= 0x20 || c >= 0x7f) {
      throw new TlsError(
        'CERTIFICATE_MALFORMED',
        `uri SAN contains byte 0x${c.toString(16).padStart(2, '0')} at position ${i - start}`,
      );
    }
    out += String.fromCharCode(c);
  }
  if (out === '') throw new TlsError('CERTIFICATE_MALFORMED', 'uri SAN is empty');
  return out;
}

function bytesEqual(buf: Uint8Array, start: number, end: number, want: Uint8Array): boolean {
  if (end - start !== want.length) return false;
  for (let i = 0; i < want.length; i++) if (buf[start + i] !== want[i]) return false;
  return true;
}
