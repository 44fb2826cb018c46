import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  cidrContains,
  formatIp,
  formatSocketAddr,
  isLoopback,
  makeCidr,
  normalizeIp,
  parseIp,
} from './ip-address.ts';

describe('ip-address', () => {
  test('normalizes IPv4, IPv6 (RFC 5952) and unmaps IPv4-mapped IPv6', () => {
    const cases: [string, string | undefined][] = [
      ['10.0.0.1', '10.0.0.1'],
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['::', '::'],
      ['::1', '::1'],
      ['fe80:0:0:1:0:0:0:0', 'fe80:0:0:1::'],
      ['fe80:0:0:0:1:0:0:0', 'fe80::1:0:0:0'],
      ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
      ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
      ['::ffff:10.1.2.3', '10.1.2.3'],
      ['::ffff:a01:203', '10.1.2.3'],
      ['64:ff9b::1.2.3.4', '64:ff9b::102:304'],
      ['fe80::1%eth0', undefined],
      ['10.0.0.256', undefined],
      ['example.com', undefined],
      ['', undefined],
    ];
    for (const [input, want] of cases) assert.equal(normalizeIp(input), want, input);
  });

  test('formats only 4- or 16-byte addresses', () => {
    assert.equal(formatIp(new Uint8Array([1, 2, 3, 4])), '1.2.3.4');
    assert.equal(formatIp(new Uint8Array(16)), '::');
    assert.equal(formatIp(new Uint8Array(5)), undefined);
    assert.equal(formatIp(new Uint8Array(0)), undefined);
  });

  test('loopback detection', () => {
    assert.equal(isLoopback('127.0.0.1'), true);
    assert.equal(isLoopback('127.255.0.9'), true);
    assert.equal(isLoopback('::1'), true);
    assert.equal(isLoopback('::ffff:127.0.0.1'), true);
    assert.equal(isLoopback('10.0.0.1'), false);
    assert.equal(isLoopback('::2'), false);
  });

  test('CIDR containment by prefix, with host bits in the prefix ignored', () => {
    const net = makeCidr(new Uint8Array([10, 1, 255, 7]), 12);
    assert.ok(net);
    assert.equal(cidrContains(net, parseIp('10.0.0.1') as Uint8Array), true);
    assert.equal(cidrContains(net, parseIp('10.15.255.255') as Uint8Array), true);
    assert.equal(cidrContains(net, parseIp('10.16.0.0') as Uint8Array), false);
    const host = makeCidr(parseIp('fd00::5') as Uint8Array, 128);
    assert.ok(host);
    assert.equal(cidrContains(host, parseIp('fd00::5') as Uint8Array), true);
    assert.equal(cidrContains(host, parseIp('fd00::6') as Uint8Array), false);
    const all = makeCidr(new Uint8Array(4), 0);
    assert.ok(all);
    assert.equal(cidrContains(all, parseIp('203.0.113.9') as Uint8Array), true);
    assert.equal(cidrContains(all, parseIp('::1') as Uint8Array), false, 'families never mix');
    assert.equal(makeCidr(new Uint8Array(4), 33), undefined);
    assert.equal(makeCidr(new Uint8Array(3), 8), undefined);
  });

  test('socket address formatting brackets IPv6', () => {
    assert.equal(formatSocketAddr({ ip: '10.0.0.1', port: 80 }), '10.0.0.1:80');
    assert.equal(formatSocketAddr({ ip: 'fd00::1', port: 8080 }), '[fd00::1]:8080');
  });
});
