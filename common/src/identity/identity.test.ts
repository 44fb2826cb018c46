import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  formatIdentity,
  formatPrincipal,
  IdentityError,
  identityEquals,
  makeIdentity,
  parseIdentity,
  tryParseIdentity,
  workloadIdentity,
} from './identity.ts';

function rejects(uri: string, code: string, fragment: string): void {
  assert.throws(
    () => parseIdentity(uri),
    (err: unknown) => {
      assert.ok(err instanceof IdentityError, `expected IdentityError, got ${String(err)}`);
      assert.equal(err.code, code);
      assert.match(err.message, new RegExp(fragment));
      return true;
    },
  );
}

describe('parseIdentity', () => {
  test('parses the canonical form', () => {
    const id = parseIdentity('spiffe://cluster.local/ns/bookinfo/sa/reviews');
    assert.deepEqual(
      { ...id },
      { trustDomain: 'cluster.local', namespace: 'bookinfo', serviceAccount: 'reviews' },
    );
    assert.ok(Object.isFrozen(id));
  });

  test('round-trips through formatIdentity', () => {
    const uri = 'spiffe://example.org/ns/istio-system/sa/ztunnel';
    assert.equal(formatIdentity(parseIdentity(uri)), uri);
  });

  test('rejects a wrong scheme', () => {
    rejects('http://cluster.local/ns/a/sa/b', 'IDENTITY_SCHEME', 'must start with');
    rejects('SPIFFE://cluster.local/ns/a/sa/b', 'IDENTITY_SCHEME', 'case-sensitive');
    rejects('cluster.local/ns/a/sa/b', 'IDENTITY_SCHEME', 'must start with');
    rejects('spiffe:/cluster.local/ns/a/sa/b', 'IDENTITY_SCHEME', 'must start with');
  });

  test('rejects missing segments', () => {
    rejects('spiffe://cluster.local/ns/a/sa', 'IDENTITY_SEGMENTS', 'found 3 path segments');
    rejects('spiffe://cluster.local/ns/a', 'IDENTITY_SEGMENTS', 'found 2 path segments');
    rejects('spiffe://cluster.local', 'IDENTITY_SEGMENTS', 'found 0 path segments');
  });

  test('rejects extra segments', () => {
    rejects('spiffe://cluster.local/ns/a/sa/b/extra', 'IDENTITY_SEGMENTS', 'found 5 path segments');
    rejects('spiffe://cluster.local/ns/a/sa/b/', 'IDENTITY_SEGMENTS', 'found 5 path segments');
  });

  test('rejects segments other than ns and sa', () => {
    rejects('spiffe://cluster.local/namespace/a/sa/b', 'IDENTITY_SEGMENTS', '"namespace"');
    rejects('spiffe://cluster.local/sa/b/ns/a', 'IDENTITY_SEGMENTS', '"sa" and "ns"');
  });

  test('rejects empty parts', () => {
    rejects('spiffe:///ns/a/sa/b', 'IDENTITY_EMPTY_PART', 'empty trust domain');
    rejects('spiffe://cluster.local/ns//sa/b', 'IDENTITY_EMPTY_PART', 'empty namespace');
    rejects('spiffe://cluster.local/ns/a/sa/', 'IDENTITY_EMPTY_PART', 'empty service account');
  });

  test('rejects NUL bytes anywhere', () => {
    rejects('spiffe://cluster.local/ns/a\0/sa/b', 'IDENTITY_NUL', 'NUL');
    rejects('spiffe://cluster.local\0/ns/a/sa/b', 'IDENTITY_NUL', 'NUL');
    rejects('\0spiffe://cluster.local/ns/a/sa/b', 'IDENTITY_NUL', 'NUL');
  });

  test('rejects characters outside the SPIFFE character set', () => {
    rejects('spiffe://Cluster.Local/ns/a/sa/b', 'IDENTITY_INVALID_CHARACTER', 'trust domain');
    rejects('spiffe://cluster.local:8080/ns/a/sa/b', 'IDENTITY_INVALID_CHARACTER', 'trust domain');
    rejects('spiffe://cluster.local/ns/a b/sa/b', 'IDENTITY_INVALID_CHARACTER', 'namespace');
    rejects('spiffe://cluster.local/ns/a/sa/b%2Fc', 'IDENTITY_INVALID_CHARACTER', 'service account');
    rejects('spiffe://cluster.local/ns/../sa/b', 'IDENTITY_INVALID_CHARACTER', 'namespace');
    rejects('spiffe://cluster.local/ns/a/sa/b?x=1', 'IDENTITY_INVALID_CHARACTER', 'service account');
  });

  test('rejects an overlong id', () => {
    rejects(`spiffe://cluster.local/ns/a/sa/${'b'.repeat(3000)}`, 'IDENTITY_TOO_LONG', 'over 2048');
  });
});

describe('identity helpers', () => {
  test('formatPrincipal drops the scheme, as AuthorizationPolicy principals do', () => {
    assert.equal(formatPrincipal(makeIdentity('cluster.local', 'a', 'b')), 'cluster.local/ns/a/sa/b');
  });

  test('tryParseIdentity returns undefined instead of throwing', () => {
    assert.equal(tryParseIdentity('spiffe://x/ns/a'), undefined);
    assert.ok(tryParseIdentity('spiffe://x/ns/a/sa/b'));
  });

  test('identityEquals compares every part', () => {
    const a = makeIdentity('td', 'ns1', 'sa1');
    assert.ok(identityEquals(a, makeIdentity('td', 'ns1', 'sa1')));
    assert.ok(!identityEquals(a, makeIdentity('td2', 'ns1', 'sa1')));
    assert.ok(!identityEquals(a, makeIdentity('td', 'ns2', 'sa1')));
    assert.ok(!identityEquals(a, makeIdentity('td', 'ns1', 'sa2')));
  });

  test('workloadIdentity applies the WDS defaults for empty fields', () => {
    assert.equal(
      formatIdentity(workloadIdentity({ trustDomain: '', namespace: 'ns', serviceAccount: '' })),
      'spiffe://cluster.local/ns/ns/sa/default',
    );
  });

  test('makeIdentity validates its parts', () => {
    assert.throws(() => makeIdentity('td', 'a/b', 'c'), IdentityError);
  });
});
