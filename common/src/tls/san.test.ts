import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { makeIdentity } from '../identity/identity.ts';
import { TestCa } from '../testing/pki.ts';
import { DerReader } from './der.ts';
import { TlsError } from './errors.ts';
import { uriSans } from './san.ts';
import { spiffeIdentities, verifyClientTrustDomain, verifyServerIdentity } from './spiffe-verifier.ts';

const SAN_OID = '2.5.29.17';

/** DER TLV with a definite length (short or long form). */
function tlv(tag: number, body: Uint8Array): Uint8Array {
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Uint8Array.from([tag, ...len, ...body]);
}

function generalNames(...names: Uint8Array[]): Uint8Array {
  return tlv(0x30, Uint8Array.from(names.flatMap((n) => [...n])));
}

const uri = (s: string | Uint8Array): Uint8Array =>
  tlv(0x86, typeof s === 'string' ? Buffer.from(s, 'latin1') : s);

function isMalformed(err: unknown): boolean {
  return err instanceof TlsError && err.code === 'CERTIFICATE_MALFORMED';
}

let ca: TestCa;
const der = async (options: Parameters<TestCa['issue']>[0]): Promise<Uint8Array> =>
  new X509Certificate((await ca.issue(options)).cert).raw;

before(async () => {
  ca = await TestCa.create();
});

describe('uriSans', () => {
  it('returns every URI SAN in certificate order, ignoring DNS names', async () => {
    const raw = await der({
      uris: ['spiffe://td/ns/a/sa/b', 'https://example.com/p', 'spiffe://td/ns/c/sa/d'],
      dnsNames: ['svc.example'],
    });
    assert.deepEqual(uriSans(raw), [
      'spiffe://td/ns/a/sa/b',
      'https://example.com/p',
      'spiffe://td/ns/c/sa/d',
    ]);
  });

  it('returns [] for a certificate without a subjectAltName extension', async () => {
    assert.deepEqual(uriSans(await der({ uris: [] })), []);
  });

  it('does not turn a DNS name that spells ", URI:spiffe://…" into a URI (CVE-2021-44532)', async () => {
    const raw = await der({ uris: [], dnsNames: ['x.example, URI:spiffe://td/ns/ns/sa/admin'] });
    assert.deepEqual(uriSans(raw), []);
    assert.deepEqual(spiffeIdentities(raw), []);
  });

  it('ignores otherName entries even when they contain URI-looking bytes', async () => {
    // otherName [0] { type-id OID 1.2.3, [0] EXPLICIT UTF8String "spiffe://td/ns/ns/sa/admin" }
    const other = tlv(
      0xa0,
      Uint8Array.from([
        ...tlv(0x06, Uint8Array.of(0x2a, 0x03)),
        ...tlv(0xa0, tlv(0x0c, Buffer.from('spiffe://td/ns/ns/sa/admin'))),
      ]),
    );
    const raw = await der({
      uris: [],
      extraExtensions: [
        { oid: SAN_OID, critical: true, value: generalNames(other, uri('spiffe://td/ns/ns/sa/real')) },
      ],
    });
    assert.deepEqual(uriSans(raw), ['spiffe://td/ns/ns/sa/real']);
  });

  it('rejects a URI with an embedded NUL byte', async () => {
    const raw = await der({
      uris: [],
      extraExtensions: [
        {
          oid: SAN_OID,
          critical: true,
          value: generalNames(uri(Buffer.from('spiffe://td/ns/ns/sa/admin\0.evil', 'latin1'))),
        },
      ],
    });
    assert.throws(() => uriSans(raw), isMalformed);
  });

  it('rejects URIs with spaces or bytes outside 7-bit ASCII', async () => {
    for (const bad of ['spiffe://td/ns/ns/sa/a b', 'spiffe://td/ns/ns/sa/\u00e9']) {
      const raw = await der({
        uris: [],
        extraExtensions: [
          { oid: SAN_OID, critical: true, value: generalNames(uri(Buffer.from(bad, 'latin1'))) },
        ],
      });
      assert.throws(() => uriSans(raw), isMalformed, bad);
    }
  });

  it('rejects a second subjectAltName extension', async () => {
    const raw = await der({
      uris: ['spiffe://td/ns/ns/sa/a'],
      extraExtensions: [
        { oid: SAN_OID, critical: true, value: generalNames(uri('spiffe://td/ns/ns/sa/admin')) },
      ],
    });
    assert.throws(() => uriSans(raw), isMalformed);
  });

  it('rejects an empty GeneralNames and trailing bytes after it', async () => {
    const empty = await der({
      uris: [],
      extraExtensions: [{ oid: SAN_OID, critical: true, value: Uint8Array.of(0x30, 0x00) }],
    });
    assert.throws(() => uriSans(empty), isMalformed);
    const trailing = await der({
      uris: [],
      extraExtensions: [
        {
          oid: SAN_OID,
          critical: true,
          value: Uint8Array.from([...generalNames(uri('spiffe://td/ns/a/sa/b')), 0x00]),
        },
      ],
    });
    assert.throws(() => uriSans(trailing), isMalformed);
  });

  it('rejects inputs that are not a certificate', () => {
    assert.throws(() => uriSans(new Uint8Array(0)), isMalformed);
    assert.throws(() => uriSans(Uint8Array.of(0x30, 0x03, 0x02, 0x01)), isMalformed);
    assert.throws(() => uriSans(Uint8Array.of(0x04, 0x00)), isMalformed);
  });
});

describe('DerReader', () => {
  it('reads short and long definite lengths', () => {
    const long = tlv(0x04, new Uint8Array(300));
    const el = new DerReader(long).next();
    assert.deepEqual(el, { tag: 0x04, start: 4, end: 304 });
  });

  it('rejects indefinite, non-minimal, oversized and truncated lengths and multi-byte tags', () => {
    const cases: [string, number[]][] = [
      ['indefinite', [0x30, 0x80, 0x00, 0x00]],
      ['long form for a short length', [0x04, 0x81, 0x05, 1, 2, 3, 4, 5]],
      ['leading zero length octet', [0x04, 0x82, 0x00, 0x81, ...new Array(0x81).fill(0)]],
      ['five length octets', [0x04, 0x85, 0, 0, 0, 0, 1, 0]],
      ['truncated contents', [0x04, 0x05, 1, 2]],
      ['truncated length', [0x04, 0x82, 0x01]],
      ['multi-byte tag', [0x1f, 0x81, 0x01, 0x00]],
    ];
    for (const [name, bytes] of cases) {
      assert.throws(() => new DerReader(Uint8Array.from(bytes)).next(), isMalformed, name);
    }
  });

  it('keeps children inside their parent', () => {
    // SEQUENCE of length 2 whose child claims 3 bytes.
    const buf = Uint8Array.of(0x30, 0x02, 0x04, 0x03, 0x00, 0x00, 0x00);
    const outer = new DerReader(buf).next();
    assert.throws(() => DerReader.within(buf, outer).next(), isMalformed);
  });
});

describe('SPIFFE verification', () => {
  it('accepts the server when any of its SPIFFE SANs equals any expected identity', async () => {
    const raw = await der({
      uris: ['https://x.example/a', 'spiffe://td/ns/ns/sa/waypoint', 'spiffe://td/ns/ns/sa/other'],
    });
    const got = verifyServerIdentity(raw, [
      makeIdentity('td', 'ns', 'nope'),
      makeIdentity('td', 'ns', 'other'),
    ]);
    assert.deepEqual(got, makeIdentity('td', 'ns', 'other'));
  });

  it('refuses a server whose identities are all unexpected, or which has none', async () => {
    const raw = await der({ identity: 'spiffe://td/ns/ns/sa/server' });
    assert.throws(
      () => verifyServerIdentity(raw, [makeIdentity('td', 'ns', 'other')]),
      (e) => e instanceof TlsError && e.code === 'PEER_IDENTITY_MISMATCH',
    );
    // Same names in another trust domain are another identity.
    assert.throws(
      () => verifyServerIdentity(raw, [makeIdentity('td2', 'ns', 'server')]),
      (e) => e instanceof TlsError && e.code === 'PEER_IDENTITY_MISMATCH',
    );
    const noSpiffe = await der({ uris: ['https://x.example/a'], dnsNames: ['server.ns.svc'] });
    assert.throws(
      () => verifyServerIdentity(noSpiffe, [makeIdentity('td', 'ns', 'server')]),
      (e) => e instanceof TlsError && e.code === 'NO_SPIFFE_SAN',
    );
  });

  it('requires a client SPIFFE SAN in the server trust domain and returns it', async () => {
    const raw = await der({ uris: ['spiffe://other/ns/a/sa/b', 'spiffe://td/ns/a/sa/c'] });
    assert.deepEqual(verifyClientTrustDomain(raw, 'td'), makeIdentity('td', 'a', 'c'));
    assert.throws(
      () => verifyClientTrustDomain(raw, 'cluster.local'),
      (e) => e instanceof TlsError && e.code === 'TRUST_DOMAIN_MISMATCH',
    );
    // A lookalike SPIFFE ID that the strict parser refuses does not count.
    const bad = await der({ uris: ['spiffe://td/ns/a/sa/b/extra', 'spiffe://TD/ns/a/sa/b'] });
    assert.throws(
      () => verifyClientTrustDomain(bad, 'td'),
      (e) => e instanceof TlsError && e.code === 'NO_SPIFFE_SAN',
    );
  });
});
