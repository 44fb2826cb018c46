// Golden tests of the nftables builders (exact text in redirect-testdata/), the pure parts around
// them (ruleset diff, eBPF config layout, cgroup lookup), and, as root, that the kernel accepts
// every golden script and that the check reads back what the script installed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { closeFd, openNetns } from '@ambient/native';
import { addressBytes, CONFIG_SIZE, encodeEbpfConfig } from '../src/redirect/ebpf-config.ts';
import {
  buildHostProbeRemoval,
  buildHostProbeRules,
  buildPodRules,
  buildPodRulesRemoval,
  DEFAULT_REDIRECT_CONFIG,
  findPodCgroup,
  netnsPathOfFd,
  podRuleset,
  RedirectError,
  resolveRedirectConfig,
} from '../src/redirect/index.ts';
import { diffRuleset, hostProbeRuleset, parseNftJson } from '../src/redirect/nftables-rules.ts';

const golden = (name: string): string =>
  readFileSync(new URL(`./redirect-testdata/${name}`, import.meta.url), 'utf8');

const POD = { ips: ['10.1.1.5'] };
const CUSTOM = {
  ipv6: false,
  captureDns: false,
  proxyMark: 0x1,
  routeMark: 0x2,
  markMask: 0xff,
  outboundPort: 25001,
  inboundPort: 25006,
  hbonePort: 25008,
  dnsPort: 25053,
  probeSnatIpv4: '169.254.9.9',
};

/** Each golden file with the call that must produce it. */
const CASES: { file: string; build: () => string }[] = [
  { file: 'pod-default.nft', build: () => buildPodRules({}, POD) },
  {
    file: 'pod-ingress-ipv4.nft',
    build: () => buildPodRules({ ipv6: false }, { ...POD, ingressMode: true }),
  },
  {
    file: 'pod-dns-off-ipv4.nft',
    build: () => buildPodRules({ ipv6: false }, { ...POD, captureDns: false }),
  },
  { file: 'pod-custom-marks-ports.nft', build: () => buildPodRules(CUSTOM, POD) },
  { file: 'pod-removal.nft', build: () => buildPodRulesRemoval() },
  { file: 'host-default.nft', build: () => buildHostProbeRules({}) },
  {
    file: 'host-kubelet-uid-ipv4.nft',
    build: () => buildHostProbeRules({ ipv6: false }, { kubeletUid: 1000 }),
  },
  { file: 'host-removal.nft', build: () => buildHostProbeRemoval() },
];

describe('nftables builders match the golden scripts', () => {
  for (const c of CASES) {
    test(c.file, () => {
      assert.equal(c.build(), golden(c.file));
    });
  }

  test('the default script carries every row of the spec §6.3 rule table', () => {
    const text = golden('pod-default.nft');
    for (const fragment of [
      'meta mark & 0xfff == 0x539 counter ct mark set ct mark & 0xfffff000 | 0x111',
      'ct mark & 0xfff == 0x111 counter meta mark set ct mark',
      'meta l4proto tcp ip saddr 169.254.7.127 counter accept',
      'meta l4proto tcp ip6 saddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff counter accept',
      'meta l4proto tcp ip daddr 169.254.7.127 counter accept',
      'ip daddr != 127.0.0.1/32 tcp dport != 15008 meta mark & 0xfff != 0x539 counter redirect to :15006',
      'oifname != "lo" meta mark & 0xfff != 0x539 udp dport 53 counter redirect to :15053',
      'ip daddr != 127.0.0.1/32 tcp dport 53 meta mark & 0xfff != 0x539 counter redirect to :15053',
      'udp dport 53 meta mark & 0xfff == 0x539 counter ct zone set 1',
      'udp sport 53 meta mark & 0xfff != 0x539 counter ct zone set 1',
      'meta l4proto tcp meta mark & 0xfff == 0x111 counter accept',
      'oifname "lo" ip daddr != 127.0.0.1/32 counter accept',
      'meta l4proto tcp ip daddr != 127.0.0.1/32 meta mark & 0xfff != 0x539 counter redirect to :15001',
      'meta l4proto tcp ip6 daddr != ::1/128 meta mark & 0xfff != 0x539 counter redirect to :15001',
    ]) {
      assert.ok(text.includes(fragment), `missing: ${fragment}`);
    }
    // The mangle output chain must be a route chain, or a changed mark is never re-routed.
    assert.match(
      text,
      /add chain inet istio-ambient-mangle output \{ type route hook output priority -150 ; \}/,
    );
  });

  test('ingress mode drops the inbound redirect and the probe exemption, keeps probe replies', () => {
    const ids = podRuleset({ ipv6: false }, { ...POD, ingressMode: true }).tables.flatMap((t) =>
      t.chains.flatMap((c) => c.rules.map((r) => r.id)),
    );
    assert.ok(!ids.includes('inbound-redirect-v4'));
    assert.ok(!ids.includes('probe-accept-v4'));
    assert.ok(ids.includes('probe-reply-accept-v4'));
    assert.ok(ids.includes('outbound-redirect-v4'));
  });

  test('a per-pod DNS override wins over the node default', () => {
    assert.ok(!buildPodRules({ captureDns: true }, { ...POD, captureDns: false }).includes(':15053'));
    assert.ok(buildPodRules({ captureDns: false }, { ...POD, captureDns: true }).includes(':15053'));
  });
});

describe('configuration is validated', () => {
  const invalid = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(
      fn,
      (err: unknown) =>
        err instanceof RedirectError && err.code === 'CONFIG_INVALID' && pattern.test(err.message),
    );

  test('marks outside the mask, equal marks, bad ports and addresses are refused', () => {
    invalid(() => resolveRedirectConfig({ proxyMark: 0x1539 }), /within mask 0xfff/);
    invalid(() => resolveRedirectConfig({ routeMark: 0x539 }), /both 0x539/);
    invalid(() => resolveRedirectConfig({ outboundPort: 70000 }), /outboundPort 70000/);
    invalid(() => resolveRedirectConfig({ probeSnatIpv4: 'fd00::1' }), /probeSnatIpv4 fd00::1/);
    invalid(() => buildPodRules({}, { ips: ['10.1.1.300'] }), /10\.1\.1\.300/);
    invalid(() => buildPodRules({ ipv6: false }, { ips: ['10.1.1.5', 'fd00::5'] }), /ipv6 is off/);
    invalid(() => buildHostProbeRules({}, { kubeletUid: -1 }), /kubeletUid -1/);
  });

  test('defaults are upstream constants', () => {
    assert.deepEqual(resolveRedirectConfig(), DEFAULT_REDIRECT_CONFIG);
    assert.equal(DEFAULT_REDIRECT_CONFIG.proxyMark, 1337);
    assert.equal(DEFAULT_REDIRECT_CONFIG.routeMark, 0x111);
  });
});

describe('eBPF config layout (struct redirect_config)', () => {
  test('addresses in network order, ports, marks and flags as u32', () => {
    const cfg = resolveRedirectConfig();
    const buf = encodeEbpfConfig(cfg, { ips: ['10.1.2.3', 'fd00::a:b', '10.9.9.9'] });
    assert.equal(buf.length, CONFIG_SIZE);
    assert.deepEqual([...buf.subarray(0, 8)], [10, 1, 2, 3, 10, 9, 9, 9]);
    assert.equal(buf.subarray(16, 32).toString('hex'), 'fd0000000000000000000000000a000b');
    assert.deepEqual([...buf.subarray(80, 84)], [169, 254, 7, 127]);
    assert.equal(buf.subarray(84, 100).toString('hex'), 'fd16925471271337ffffffffffffffff');
    assert.equal(buf.readUInt32LE(100), 0x539);
    assert.equal(buf.readUInt32LE(104), 0xfff);
    assert.equal(buf.readUInt32LE(108), 0x111);
    assert.deepEqual(
      [112, 116, 120, 124].map((o) => buf.readUInt32LE(o)),
      [15001, 15006, 15008, 15053],
    );
    assert.equal(buf.readUInt32LE(128), 3, 'inbound and DNS capture on');
    assert.equal(encodeEbpfConfig(cfg, { ips: ['10.1.2.3'], ingressMode: true }).readUInt32LE(128), 2);
  });

  test('IPv6 text forms, including an embedded IPv4 tail', () => {
    assert.equal(addressBytes('::1').toString('hex'), `${'0'.repeat(30)}01`);
    assert.equal(addressBytes('::ffff:10.1.2.3').toString('hex'), '00000000000000000000ffff0a010203');
    assert.equal(
      addressBytes('fd16:9254:7127:1337:ffff:ffff:ffff:ffff').toString('hex'),
      'fd16925471271337ffffffffffffffff',
    );
    assert.equal(addressBytes('2001:db8::').toString('hex'), `20010db8${'0'.repeat(24)}`);
  });

  test('more pod IPs than the program holds is a configuration error', () => {
    assert.throws(
      () =>
        encodeEbpfConfig(resolveRedirectConfig(), {
          ips: ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5'],
        }),
      (err: unknown) => err instanceof RedirectError && err.code === 'CONFIG_INVALID',
    );
  });
});

describe('pod cgroup lookup by UID', () => {
  let root = '';
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'ambcni-cgroup-'));
    mkdirSync(join(root, 'kubepods', 'burstable', 'pod1111-2222'), { recursive: true });
    mkdirSync(
      join(root, 'kubepods.slice', 'kubepods-besteffort.slice', 'kubepods-besteffort-pod3333_4444.slice'),
      {
        recursive: true,
      },
    );
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test('cgroupfs and systemd driver layouts', () => {
    assert.equal(findPodCgroup('1111-2222', root), join(root, 'kubepods', 'burstable', 'pod1111-2222'));
    assert.equal(
      findPodCgroup('3333-4444', root),
      join(root, 'kubepods.slice', 'kubepods-besteffort.slice', 'kubepods-besteffort-pod3333_4444.slice'),
    );
    assert.throws(
      () => findPodCgroup('5555', root),
      (err: unknown) => err instanceof RedirectError && err.code === 'CGROUP_NOT_FOUND',
    );
  });
});

const isRoot = process.getuid?.() === 0;

describe('the kernel accepts the golden scripts and the check reads them back', {
  skip: !isRoot && 'needs root to create a network namespace',
}, () => {
  const ns = `ambcni-rules-${process.pid}`;
  const nsPath = `/var/run/netns/${ns}`;
  const nsenter = (args: string[], input?: string): string =>
    execFileSync('nsenter', [`--net=${nsPath}`, '--', ...args], { input, encoding: 'utf8' });

  before(() => {
    execFileSync('ip', ['netns', 'add', ns]);
  });
  after(() => {
    execFileSync('ip', ['netns', 'delete', ns]);
  });

  for (const c of CASES) {
    test(`nft -c accepts ${c.file}`, () => {
      nsenter(['nft', '-c', '-f', '-'], golden(c.file));
    });
  }

  test('after applying the default script twice the listing matches the ruleset; a deleted rule is reported', () => {
    nsenter(['nft', '-f', '-'], golden('pod-default.nft'));
    nsenter(['nft', '-f', '-'], golden('pod-default.nft'));
    const want = podRuleset({}, POD);
    assert.deepEqual(diffRuleset(parseNftJson(nsenter(['nft', '-j', 'list', 'ruleset'])), want), []);
    const listed = JSON.parse(
      nsenter(['nft', '-j', 'list', 'chain', 'inet', 'istio-ambient-nat', 'istio-output']),
    );
    const rule = listed.nftables.find(
      (i: { rule?: { comment?: string } }) => i.rule?.comment === 'loopback-accept-v4',
    );
    nsenter([
      'nft',
      'delete',
      'rule',
      'inet',
      'istio-ambient-nat',
      'istio-output',
      'handle',
      String(rule.rule.handle),
    ]);
    const problems = diffRuleset(parseNftJson(nsenter(['nft', '-j', 'list', 'ruleset'])), want);
    assert.equal(problems.length, 1);
    assert.equal(problems[0]?.chain, 'istio-output');
    nsenter(['nft', '-f', '-'], golden('pod-removal.nft'));
    nsenter(['nft', '-f', '-'], golden('pod-removal.nft'));
    assert.equal(nsenter(['nft', 'list', 'tables']).trim(), '');
  });

  test('a netns fd can be named by path for nsenter', () => {
    const fd = openNetns(nsPath);
    try {
      const path = netnsPathOfFd(fd);
      assert.equal(statSync(path).ino, statSync(nsPath).ino);
      assert.match(
        execFileSync('nsenter', [`--net=${path}`, '--', 'ip', '-o', 'link', 'show'], { encoding: 'utf8' }),
        /\blo\b/,
      );
    } finally {
      closeFd(fd);
    }
  });

  test('the host script keeps enrolled pods when re-applied', () => {
    nsenter(['nft', '-f', '-'], golden('host-default.nft'));
    nsenter([
      'nft',
      'add',
      'element',
      'inet',
      'istio-ambient-nat',
      'istio-inpod-probes-v4',
      '{ 10.1.1.5 comment "uid-a" }',
    ]);
    nsenter(['nft', '-f', '-'], golden('host-default.nft'));
    const listing = nsenter(['nft', 'list', 'set', 'inet', 'istio-ambient-nat', 'istio-inpod-probes-v4']);
    assert.match(listing, /10\.1\.1\.5 comment "uid-a"/);
    assert.deepEqual(
      diffRuleset(parseNftJson(nsenter(['nft', '-j', 'list', 'ruleset'])), {
        tables: [hostProbeRuleset({})],
      }),
      [],
    );
    nsenter(['nft', '-f', '-'], golden('host-removal.nft'));
    assert.equal(nsenter(['nft', 'list', 'tables']).trim(), '');
  });
});
