import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatAuthority, parseAuthority } from './authority.ts';
import { HboneError } from './errors.ts';

describe('parseAuthority', () => {
  it('parses IPv4, bracketed IPv6 (canonicalised) and hostname authorities', () => {
    assert.deepEqual(parseAuthority('10.0.0.5:8080'), {
      kind: 'ip',
      address: '10.0.0.5',
      family: 4,
      port: 8080,
    });
    assert.deepEqual(parseAuthority('[fd00:0::05]:80'), {
      kind: 'ip',
      address: 'fd00::5',
      family: 6,
      port: 80,
    });
    assert.deepEqual(parseAuthority('reviews.default.svc.cluster.local:9080'), {
      kind: 'hostname',
      hostname: 'reviews.default.svc.cluster.local',
      port: 9080,
    });
    assert.deepEqual(parseAuthority('[::ffff:10.0.0.1]:1'), {
      kind: 'ip',
      address: '::ffff:10.0.0.1',
      family: 6,
      port: 1,
    });
  });

  it('refuses authorities ztunnel answers with 400', () => {
    for (const bad of [
      '',
      'foo',
      '10.0.0.5',
      '10.0.0.5:',
      '10.0.0.5:0',
      '10.0.0.5:65536',
      '10.0.0.5:+80',
      '10.0.0.5:80a',
      'fd00::5:80',
      '[fd00::5]',
      '[fd00::5]80',
      '[10.0.0.5]:80',
      '[fe80::1%eth0]:80',
      '999.1.1.1:80',
      '010.0.0.1:80',
      'a..b:80',
      '-a.example:80',
      'a_b.example:80',
      'user@host:80',
      `${'a'.repeat(64)}.example:80`,
      ':80',
    ]) {
      assert.throws(
        () => parseAuthority(bad),
        (e) => e instanceof HboneError && e.code === 'HBONE_AUTHORITY',
        JSON.stringify(bad),
      );
    }
  });

  it('formats socket addresses with brackets for IPv6', () => {
    assert.equal(formatAuthority({ address: '10.1.2.3', port: 15008 }), '10.1.2.3:15008');
    assert.equal(formatAuthority({ address: 'fd00::1', port: 15008 }), '[fd00::1]:15008');
    assert.equal(formatAuthority(parseAuthority('svc.ns:80')), 'svc.ns:80');
  });
});
