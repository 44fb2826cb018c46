// The traffic suite of in-pod redirection, run against both modes (nftables and eBPF) on the
// netns harness: two nodes, each with a stand-in ztunnel (redirect-standin-ztunnel.ts, a separate
// process in the node's cgroup, as ztunnel is), and per mode three pods:
//   client  node1, enrolled       (its app dials out)
//   server  node2, enrolled       (echo app on 8080)
//   plain   node1, not enrolled   (echo app on 8080, and a non-mesh client)
// Host probe SNAT rules are installed in both node netns.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Harness, type HarnessProcess, type MeshNode, type Pod } from '@ambient/test/harness';
import {
  addPodToProbeSet,
  applyHostProbeRules,
  createRedirector,
  listProbeSetEntries,
  podPinDir,
  REDIRECT_OBJECT_PATH,
  type RedirectMode,
  type Redirector,
  removePodFromProbeSet,
} from '../src/redirect/index.ts';
import { pinRoot, sweepPinRoots, TEST_PIN_PREFIX } from './redirect-pins.ts';

const isRoot = process.getuid?.() === 0;
const STANDIN = fileURLToPath(new URL('./redirect-standin-ztunnel.ts', import.meta.url));
const APP = fileURLToPath(new URL('./redirect-app.ts', import.meta.url));
const PIN_ROOT = pinRoot(TEST_PIN_PREFIX);
const MODES: readonly RedirectMode[] = ['nftables', 'ebpf'];
const APP_PORT = 8080;

type Json = Record<string, unknown>;

function skipReason(): string | false {
  if (!isRoot) return 'needs root for network namespaces, nft and bpf';
  if (!existsSync(REDIRECT_OBJECT_PATH))
    return `eBPF object not built (${REDIRECT_OBJECT_PATH}); npm run build -w @ambient/cni`;
  return false;
}

function nsenter(netnsPath: string, args: string[]): string {
  return execFileSync('nsenter', [`--net=${netnsPath}`, '--', ...args], { encoding: 'utf8' });
}

class Standin {
  readonly proc: HarnessProcess;
  #seq = 0;

  constructor(node: MeshNode) {
    this.proc = node.spawnNode(STANDIN);
  }

  send(cmd: Json): void {
    this.proc.stdin?.write(`${JSON.stringify(cmd)}\n`);
  }

  event(pred: (e: Json) => boolean, timeoutMs = 8000): Promise<Json> {
    return this.proc.waitForJson(pred, { timeoutMs });
  }

  /** Every event printed so far that matches. */
  events(pred: (e: Json) => boolean): Json[] {
    return this.proc.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Json)
      .filter(pred);
  }

  async add(pod: Pod, pinDir: string | undefined): Promise<void> {
    this.send({ op: 'add', uid: pod.uid, netns: pod.netnsPath, ...(pinDir ? { pinDir } : {}) });
    await this.event((e) => (e.event === 'added' || e.event === 'error') && e.uid === pod.uid).then((e) => {
      if (e.event === 'error') throw new Error(`stand-in add ${pod.key}: ${String(e.message)}`);
    });
  }

  async register(pod: Pod, pinDir: string): Promise<void> {
    const n = this.events((e) => e.event === 'registered' && e.uid === pod.uid).length;
    this.send({ op: 'register', uid: pod.uid, pinDir });
    await this.event(() => this.events((e) => e.event === 'registered' && e.uid === pod.uid).length > n);
  }

  async dial(pod: Pod, address: string, port: number, message: string): Promise<Json> {
    const id = ++this.#seq;
    this.send({ op: 'dial', id, uid: pod.uid, address, port, message });
    const e = await this.event((x) => (x.event === 'dialed' || x.event === 'error') && x.id === id);
    if (e.event === 'error') throw new Error(`stand-in dial: ${String(e.message)}`);
    return e;
  }
}

interface ClientResult {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  received: string;
}

async function runClient(
  host: Pod | MeshNode,
  address: string,
  port: number,
  message: string,
  extra: string[] = [],
): Promise<ClientResult> {
  const r = await host.execNode(
    APP,
    ['client', '--host', address, '--port', String(port), '--message', message, ...extra],
    {
      timeoutMs: 15_000,
    },
  );
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as ClientResult;
}

const orig = (e: Json): Json => e.orig as Json;
const peer = (e: Json): Json => e.peer as Json;

describe('in-pod redirection traffic', { skip: skipReason() }, () => {
  let mesh: Harness;
  let node1: MeshNode;
  let node2: MeshNode;
  const standins = new Map<MeshNode, Standin>();

  before(async () => {
    sweepPinRoots();
    mkdirSync(PIN_ROOT, { recursive: true });
    mesh = await Harness.create({ nodes: 2 });
    [node1, node2] = mesh.nodes as [MeshNode, MeshNode];
    for (const node of [node1, node2]) {
      const s = new Standin(node);
      standins.set(node, s);
      await s.event((e) => e.event === 'ready');
      await applyHostProbeRules(node.netnsPath);
    }
  });

  after(async () => {
    await mesh?.destroy();
    rmSync(PIN_ROOT, { recursive: true, force: true });
  });

  for (const mode of MODES) {
    describe(`${mode} mode`, () => {
      let client: Pod;
      let server: Pod;
      let plain: Pod;
      let serverApp: HarnessProcess;
      let plainApp: HarnessProcess;
      const redirectors = new Map<MeshNode, Redirector>();
      const s1 = (): Standin => standins.get(node1) as Standin;
      const s2 = (): Standin => standins.get(node2) as Standin;
      const redirectorOf = (pod: Pod): Redirector => redirectors.get(pod.node) as Redirector;
      const target = (pod: Pod) => ({
        uid: pod.uid,
        netnsPath: pod.netnsPath,
        cgroupPath: pod.cgroupPath,
        pod: { ips: pod.ips },
      });
      const pinDir = (pod: Pod): string | undefined =>
        mode === 'ebpf' ? podPinDir(pod.uid, PIN_ROOT) : undefined;

      async function enroll(pod: Pod): Promise<void> {
        await redirectorOf(pod).apply(target(pod));
        await addPodToProbeSet(pod.node.netnsPath, pod.uid, pod.ips);
        await (standins.get(pod.node) as Standin).add(pod, pinDir(pod));
      }

      /** The app's echo server line for a connection from this source. */
      function appSaw(app: HarnessProcess, port: number): Promise<Json> {
        return app.waitForJson((e) => e.event === 'connection' && e.remotePort === port, { timeoutMs: 8000 });
      }

      before(async () => {
        for (const node of [node1, node2]) {
          redirectors.set(
            node,
            mode === 'nftables'
              ? createRedirector({ mode })
              : createRedirector({ mode, proxyCgroupPath: node.cgroupPath, pinRoot: PIN_ROOT }),
          );
        }
        client = await node1.addPod({ name: `client-${mode}`, namespace: 'redirect' });
        server = await node2.addPod({ name: `server-${mode}`, namespace: 'redirect' });
        plain = await node1.addPod({ name: `plain-${mode}`, namespace: 'redirect' });
        serverApp = server.spawnNode(APP, ['serve', '--port', String(APP_PORT)]);
        plainApp = plain.spawnNode(APP, ['serve', '--port', String(APP_PORT)]);
        await serverApp.waitForLine('"listening"');
        await plainApp.waitForLine('"listening"');
        await enroll(client);
        await enroll(server);
      });

      after(async () => {
        for (const pod of [client, server]) {
          if (!pod) continue;
          await redirectorOf(pod)
            .remove(target(pod))
            .catch(() => {});
          (standins.get(pod.node) as Standin).send({ op: 'remove', uid: pod.uid });
        }
      });

      test('outbound captured: the app reaches 15001 and the original destination is recovered', {
        timeout: 30_000,
      }, async () => {
        const r = await runClient(client, server.ip, APP_PORT, 'outbound');
        assert.equal(r.received, 'outbound', 'the echo came back through both stand-in hops');
        assert.equal(r.remoteAddress, server.ip, 'getpeername shows the dialled address');
        assert.equal(r.remotePort, APP_PORT);
        const e = await s1().event(
          (x) => x.event === 'accepted' && x.listener === 15001 && peer(x).port === r.localPort,
        );
        assert.equal(e.uid, client.uid);
        assert.deepEqual(
          { address: orig(e).address, port: orig(e).port },
          { address: server.ip, port: APP_PORT },
        );
        assert.equal(orig(e).via, 'original-dst');
        assert.equal(peer(e).address, client.ip);
      });

      test('IPv4-mapped IPv6 sockets are captured the same way', { timeout: 30_000 }, async () => {
        const r = await runClient(client, `::ffff:${server.ip}`, APP_PORT, 'mapped');
        assert.equal(r.received, 'mapped');
        assert.equal(r.remoteAddress, `::ffff:${server.ip}`, 'getpeername shows the dialled address');
        assert.equal(r.remotePort, APP_PORT);
        const e = await s1().event(
          (x) => x.event === 'accepted' && x.listener === 15001 && peer(x).port === r.localPort,
        );
        assert.deepEqual(
          { address: orig(e).address, port: orig(e).port },
          { address: server.ip, port: APP_PORT },
        );
      });

      test('DNS to port 53 is captured to 15053 (UDP and TCP) and answers show the server asked', {
        timeout: 30_000,
      }, async () => {
        // Never reached: the query is captured inside the pod (or, if not, dropped on the node).
        const dnsServer = '10.96.0.10';
        const responder = client.spawnNode(APP, ['dns-responder', '--port', '15053']);
        try {
          await responder.waitForLine('"listening"');
          const udp = await client.execNode(
            APP,
            ['dns', '--host', dnsServer, '--port', '53', '--message', 'q-udp'],
            {
              timeoutMs: 15_000,
            },
          );
          assert.deepEqual(JSON.parse(udp.stdout.trim()), {
            received: 'answer:q-udp',
            from: { address: dnsServer, port: 53 },
          });
          const tcp = await runClient(client, dnsServer, 53, 'q-tcp');
          assert.equal(tcp.received, 'answer:q-tcp');
          assert.equal(tcp.remoteAddress, dnsServer);
          assert.equal(tcp.remotePort, 53);
        } finally {
          await responder.stop();
        }
      });

      test('inbound captured: a mesh client lands on 15006 and the app sees the original source', {
        timeout: 30_000,
      }, async () => {
        const r = await runClient(client, server.ip, APP_PORT, 'inbound');
        assert.equal(r.received, 'inbound');
        const out = await s1().event(
          (x) => x.event === 'upstream' && x.listener === 15001 && peer(x).port === r.localPort,
        );
        const upstreamPort = (out.local as Json).port;
        const e = await s2().event(
          (x) => x.event === 'accepted' && x.listener === 15006 && peer(x).port === upstreamPort,
        );
        assert.equal(e.uid, server.uid);
        assert.deepEqual(
          { address: orig(e).address, port: orig(e).port },
          { address: server.ip, port: APP_PORT },
        );
        assert.equal(peer(e).address, client.ip);
        const toApp = await s2().event(
          (x) => x.event === 'upstream' && x.listener === 15006 && peer(x).port === upstreamPort,
        );
        const seen = await appSaw(serverApp, (toApp.local as Json).port as number);
        assert.equal(
          seen.remoteAddress,
          client.ip,
          'spoofed source and the reply route back to the stand-in work',
        );
      });

      test('plaintext inbound captured: a non-mesh pod lands on 15006', { timeout: 30_000 }, async () => {
        const r = await runClient(plain, server.ip, APP_PORT, 'plaintext');
        assert.equal(r.received, 'plaintext');
        assert.equal(r.remoteAddress, server.ip);
        const e = await s2().event(
          (x) => x.event === 'accepted' && x.listener === 15006 && peer(x).port === r.localPort,
        );
        assert.deepEqual(
          { address: orig(e).address, port: orig(e).port },
          { address: server.ip, port: APP_PORT },
        );
        assert.equal(peer(e).address, plain.ip);
        const toApp = await s2().event(
          (x) => x.event === 'upstream' && x.listener === 15006 && peer(x).port === r.localPort,
        );
        assert.equal((await appSaw(serverApp, (toApp.local as Json).port as number)).remoteAddress, plain.ip);
      });

      test('15008 is not captured: it reaches the HBONE listener directly', { timeout: 30_000 }, async () => {
        const r = await runClient(plain, server.ip, 15008, 'hbone');
        assert.equal(r.received, 'hbone-standin\n');
        const e = await s2().event((x) => x.event === 'accepted' && peer(x).port === r.localPort);
        assert.equal(e.listener, 15008);
        assert.deepEqual(e.local, { address: server.ip, port: 15008 });
      });

      test('node probes bypass the capture once SNATed, and are captured without the SNAT', {
        timeout: 30_000,
      }, async () => {
        const probe = await runClient(node2, server.ip, APP_PORT, 'probe');
        assert.equal(probe.received, 'probe');
        const seen = await appSaw(serverApp, probe.localPort);
        assert.equal(seen.remoteAddress, '169.254.7.127', 'the host SNATed the probe');
        await sleep(200);
        assert.deepEqual(
          s2().events((x) => x.event === 'accepted' && peer(x).address === '169.254.7.127'),
          [],
          'no probe reached the stand-in',
        );
        // Control: without the pod in the probe set, the same connection is plain inbound traffic.
        await removePodFromProbeSet(node2.netnsPath, server.uid);
        try {
          assert.deepEqual(await listProbeSetEntries(node2.netnsPath), []);
          const direct = await runClient(node2, server.ip, APP_PORT, 'unsnated');
          assert.equal(direct.received, 'unsnated');
          const e = await s2().event(
            (x) => x.event === 'accepted' && x.listener === 15006 && peer(x).port === direct.localPort,
          );
          assert.notEqual(peer(e).address, '169.254.7.127');
        } finally {
          await addPodToProbeSet(node2.netnsPath, server.uid, server.ips);
        }
        assert.deepEqual(await listProbeSetEntries(node2.netnsPath), [{ ip: server.ip, uid: server.uid }]);
      });

      test("ztunnel's own traffic is not looped: marked sockets reach the real destination", {
        timeout: 30_000,
      }, async () => {
        const dialed = await s1().dial(client, plain.ip, APP_PORT, 'own');
        assert.equal(dialed.received, 'own');
        const dialPort = (dialed.local as Json).port as number;
        assert.equal((await appSaw(plainApp, dialPort)).remoteAddress, client.ip);
        // An app socket that carries the mark itself is exempt too (the rules match the mark).
        const marked = await runClient(client, plain.ip, APP_PORT, 'marked', ['--mark', String(0x539)]);
        assert.equal(marked.received, 'marked');
        assert.equal((await appSaw(plainApp, marked.localPort)).remoteAddress, client.ip);
        await sleep(200);
        assert.deepEqual(
          s1().events(
            (x) => x.event === 'accepted' && [dialPort, marked.localPort].includes(peer(x).port as number),
          ),
          [],
        );
      });

      test('localhost traffic and traffic to the pod itself are not captured', {
        timeout: 30_000,
      }, async () => {
        const local = client.spawnNode(APP, ['serve', '--port', '9000']);
        try {
          await local.waitForLine('"listening"');
          const viaLo = await runClient(client, '127.0.0.1', 9000, 'lo');
          assert.equal(viaLo.received, 'lo');
          const viaPodIp = await runClient(client, client.ip, 9000, 'self');
          assert.equal(viaPodIp.received, 'self');
          assert.equal(
            (await local.waitForJson((e) => e.remotePort === viaPodIp.localPort)).remoteAddress,
            client.ip,
          );
          await sleep(200);
          assert.deepEqual(
            s1().events(
              (x) =>
                x.event === 'accepted' &&
                [viaLo.localPort, viaPodIp.localPort].includes(peer(x).port as number),
            ),
            [],
          );
        } finally {
          await local.stop();
        }
      });

      test('apply is idempotent and check/reconcile repair missing pieces', { timeout: 60_000 }, async () => {
        const rc = redirectorOf(client);
        const rs = redirectorOf(server);
        const snapshot = (pod: Pod): string =>
          mode === 'nftables'
            ? nsenter(pod.netnsPath, ['nft', 'list', 'ruleset']).replace(/packets \d+ bytes \d+/g, '')
            : readdirSync(join(pinDir(pod) as string, 'links'))
                .map((l) =>
                  execFileSync(
                    'bpftool',
                    ['-j', 'link', 'show', 'pinned', join(pinDir(pod) as string, 'links', l)],
                    { encoding: 'utf8' },
                  ),
                )
                .join('');
        const before = snapshot(client);
        await rc.apply(target(client));
        await rc.apply(target(client));
        assert.equal(snapshot(client), before, 'applying again changed nothing');
        assert.deepEqual(
          await rc.check(target(client)),
          mode === 'nftables'
            ? { ok: true, problems: [] }
            : { ok: true, problems: [], inboundListenerRegistered: true },
        );

        // Break one piece per pod.
        if (mode === 'nftables') {
          const chain = JSON.parse(
            nsenter(client.netnsPath, [
              'nft',
              '-j',
              'list',
              'chain',
              'inet',
              'istio-ambient-nat',
              'istio-output',
            ]),
          );
          const rule = chain.nftables.find(
            (i: Json) => (i.rule as Json | undefined)?.comment === 'outbound-redirect-v4',
          );
          nsenter(client.netnsPath, [
            'nft',
            'delete',
            'rule',
            'inet',
            'istio-ambient-nat',
            'istio-output',
            'handle',
            String(rule.rule.handle),
          ]);
          nsenter(server.netnsPath, [
            'ip',
            'rule',
            'del',
            'fwmark',
            '0x111/0xfff',
            'pref',
            '32764',
            'lookup',
            '100',
          ]);
        } else {
          rmSync(join(pinDir(client) as string, 'links', 'connect4'));
          nsenter(server.netnsPath, [
            'tc',
            'filter',
            'del',
            'dev',
            'lo',
            'ingress',
            'pref',
            '1337',
            'handle',
            '0x539',
            'bpf',
          ]);
        }
        const broken = await rc.check(target(client));
        assert.equal(broken.ok, false);
        assert.match(broken.problems.join('\n'), mode === 'nftables' ? /istio-output/ : /connect4 missing/);
        const brokenServer = await rs.check(target(server));
        assert.match(
          brokenServer.problems.join('\n'),
          mode === 'nftables' ? /rule fwmark 0x111/ : /tc filter/,
        );
        // While broken, the client's outbound is not captured.
        const uncaptured = await runClient(client, plain.ip, APP_PORT, 'uncaptured');
        await sleep(200);
        assert.deepEqual(
          s1().events((x) => x.event === 'accepted' && peer(x).port === uncaptured.localPort),
          [],
        );

        const fixed = await rc.reconcile(target(client));
        assert.equal(fixed.repaired, true);
        assert.equal(fixed.before.ok, false);
        assert.equal((await rs.reconcile(target(server))).repaired, true);
        assert.equal((await rc.check(target(client))).ok, true);
        assert.equal((await rs.check(target(server))).ok, true);
        assert.equal((await rc.reconcile(target(client))).repaired, false, 'nothing left to repair');
        if (mode === 'ebpf') {
          // A redone eBPF set has a new inbound SOCKMAP: ztunnel must register again.
          for (const [pod, r] of [
            [client, rc],
            [server, rs],
          ] as const) {
            const c = (await r.check(target(pod))) as { inboundListenerRegistered?: boolean };
            assert.equal(c.inboundListenerRegistered, false, `${pod.key}: the repaired SOCKMAP is new`);
            await (standins.get(pod.node) as Standin).register(pod, pinDir(pod) as string);
            assert.equal(
              ((await r.check(target(pod))) as { inboundListenerRegistered?: boolean })
                .inboundListenerRegistered,
              true,
            );
          }
        }

        // Captured again, end to end through both stand-ins (the server's reply route is back).
        const r = await runClient(client, server.ip, APP_PORT, 'repaired');
        assert.equal(r.received, 'repaired');
        const e = await s1().event(
          (x) => x.event === 'accepted' && x.listener === 15001 && peer(x).port === r.localPort,
        );
        assert.equal(orig(e).address, server.ip);
      });

      test('removal restores direct traffic and leaves nothing behind', { timeout: 60_000 }, async () => {
        for (const pod of [client, server]) {
          await redirectorOf(pod).remove(target(pod));
          await redirectorOf(pod).remove(target(pod));
          await removePodFromProbeSet(pod.node.netnsPath, pod.uid);
        }
        const r = await runClient(client, server.ip, APP_PORT, 'direct');
        assert.equal(r.received, 'direct');
        assert.equal(
          (await appSaw(serverApp, r.localPort)).remoteAddress,
          client.ip,
          'no stand-in in between',
        );
        await sleep(200);
        assert.deepEqual(
          s1().events((x) => x.event === 'accepted' && peer(x).port === r.localPort),
          [],
        );
        for (const pod of [client, server]) {
          assert.equal(
            nsenter(pod.netnsPath, ['nft', 'list', 'tables']).trim(),
            '',
            `${pod.key}: nft tables left`,
          );
          assert.doesNotMatch(nsenter(pod.netnsPath, ['ip', 'rule', 'show']), /lookup 100/);
          assert.equal(nsenter(pod.netnsPath, ['ip', 'route', 'show', 'table', '100']).trim(), '');
          assert.equal(nsenter(pod.netnsPath, ['tc', 'filter', 'show', 'dev', 'lo', 'ingress']).trim(), '');
          assert.equal(nsenter(pod.netnsPath, ['sysctl', '-n', 'net.ipv4.tcp_fwmark_accept']).trim(), '0');
          const dir = podPinDir(pod.uid, PIN_ROOT);
          assert.equal(existsSync(dir), false, `${dir} left`);
          const cgroupProgs = execFileSync('bpftool', ['-j', 'cgroup', 'show', pod.cgroupPath], {
            encoding: 'utf8',
          });
          assert.deepEqual(
            JSON.parse(cgroupProgs.trim() || '[]'),
            [],
            `${pod.key}: programs still attached to its cgroup`,
          );
        }
        for (const node of [node1, node2]) {
          const progs = JSON.parse(
            execFileSync('bpftool', ['-j', 'cgroup', 'show', node.cgroupPath], { encoding: 'utf8' }).trim() ||
              '[]',
          );
          assert.deepEqual(progs, [], `${node.name}: getsockopt program left on the proxy cgroup`);
          assert.deepEqual(
            (await listProbeSetEntries(node.netnsPath)).filter(
              (e) => e.uid === client.uid || e.uid === server.uid,
            ),
            [],
          );
        }
      });
    });
  }
});
