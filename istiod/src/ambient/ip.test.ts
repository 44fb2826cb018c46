import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatIp, maskPrefix, parseCidr, parseIp } from './ip.ts';

describe('parseIp', () => {
  it('parses IPv4 into 4 bytes', () => {
    assert.deepEqual(parseIp('10.1.2.3'), new Uint8Array([10, 1, 2, 3]));
    assert.deepEqual(parseIp('0.0.0.0'), new Uint8Array([0, 0, 0, 0]));
  });

  it('parses IPv6 forms into 16 bytes', () => {
    const full = new Uint8Array(16);
    full[15] = 1;
    assert.deepEqual(parseIp('::1'), full);
    assert.deepEqual(parseIp('0:0:0:0:0:0:0:1'), full);
    const v = parseIp('2001:db8::8:800:200c:417a');
    assert.deepEqual(
      v,
      new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0x08, 0x08, 0, 0x20, 0x0c, 0x41, 0x7a]),
    );
    assert.deepEqual(
      parseIp('::ffff:10.0.0.1'),
      new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]),
    );
    assert.deepEqual(parseIp('fe80::1%eth0')?.length, 16);
  });

  it('rejects what Go netip rejects', () => {
    for (const bad of [
      '',
      '1.2.3',
      '1.2.3.4.5',
      '256.1.1.1',
      '01.2.3.4',
      '1.2.3.4 ',
      'a.b.c.d',
      '::1::',
      '1:2:3:4:5:6:7:8:9',
      ':::',
      '1::2::3',
      '12345::',
      'fe80::1%',
      '1:2:3:4:5:6:7::8',
    ]) {
      assert.equal(parseIp(bad), undefined, bad);
    }
  });
});

describe('parseCidr / maskPrefix', () => {
  it('keeps the address as written and the prefix length', () => {
    assert.deepEqual(parseCidr('10.0.0.5/24'), { address: new Uint8Array([10, 0, 0, 5]), length: 24 });
    assert.deepEqual(parseCidr('10.0.0.5'), { address: new Uint8Array([10, 0, 0, 5]), length: 32 });
    assert.equal(parseCidr('::/0')?.length, 0);
  });

  it('rejects bad lengths', () => {
    for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/08', '::/129', 'x/8']) {
      assert.equal(parseCidr(bad), undefined, bad);
    }
  });

  it('masks host bits', () => {
    const p = parseCidr('10.1.2.3/12');
    assert.ok(p);
    assert.deepEqual(maskPrefix(p).address, new Uint8Array([10, 0, 0, 0]));
  });
});

describe('formatIp', () => {
  it('formats like netip.Addr.String', () => {
    assert.equal(formatIp(new Uint8Array([10, 0, 0, 1])), '10.0.0.1');
    assert.equal(formatIp(parseIp('2001:db8:0:0:1:0:0:1') as Uint8Array), '2001:db8::1:0:0:1');
    assert.equal(formatIp(parseIp('::1') as Uint8Array), '::1');
    assert.equal(formatIp(parseIp('::') as Uint8Array), '::');
    assert.equal(formatIp(parseIp('fd00:1:2:3:4:5:6:7') as Uint8Array), 'fd00:1:2:3:4:5:6:7');
    assert.equal(formatIp(parseIp('::ffff:1.2.3.4') as Uint8Array), '::ffff:1.2.3.4');
    assert.equal(formatIp(parseIp('1:0:2::') as Uint8Array), '1:0:2::');
  });
});
