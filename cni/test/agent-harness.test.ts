/**
 * The node agent end to end (spec §6.4, checklist 34–36): pods created through the harness's real
 * CNI chain (bridge + host-local, then the compiled istio-cni), the agent in this process with a
 * local manifests directory as its config source and the harness node's netns as the host netns,
 * and a ZdsClient standing in for ztunnel (acking every add). Needs root.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, suite, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Logging } from '@ambient/common/log';
import { ZdsClient, type ZdsSnapshot, type ZdsWorkloadInfo } from '@ambient/common/zds';
import { closeFd, netnsInode } from '@ambient/native';
import { CniError, Harness, type HarnessProcess, type MeshNode, type Pod } from '@ambient/test/harness';
import { buildPlugin, PLUGIN_BUILD_DIR } from '../scripts/build-plugin.ts';
import { CniAgent } from '../src/agent/app.ts';
import { loadAgentConfig } from '../src/agent/config.ts';
import { REDIRECTION_ANNOTATION } from '../src/agent/pod-annotator.ts';
import { CNI_ERROR_CODE } from '../src/plugin-protocol.ts';
import { listProbeSetEntries } from '../src/redirect/host-probe.ts';
import { listRuleset, removeNftablesRedirection } from '../src/redirect/nftables.ts';
import { POD_NAT_TABLE } from '../src/redirect/nftables-rules.ts';

const isRoot = process.getuid?.() === 0;
const STANDIN = fileURLToPath(new URL('./redirect-standin-ztunnel.ts', import.meta.url));
const APP = fileURLToPath(new URL('./redirect-app.ts', import.meta.url));
const APP_PORT = 7000;

/** A client app holding one connection open: each stdin line is sent, each echoed line printed. */
const LONG_LIVED_CLIENT = {
  code: `
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
const [host, port] = process.argv.slice(2);
const s = connect(Number(port), host, () => console.log(JSON.stringify({ event: 'connected', localPort: s.localPort })));
s.setEncoding('utf8');
let buf = '';
s.on('data', (d) => {
  buf += d;
  for (let i = buf.indexOf('\\n'); i !== -1; i = buf.indexOf('\\n')) {
    console.log(JSON.stringify({ event: 'echo', data: buf.slice(0, i) }));
    buf = buf.slice(i + 1);
  }
});
s.on('error', (e) => console.log(JSON.stringify({ event: 'error', message: e.message })));
s.on('close', () => { console.log(JSON.stringify({ event: 'closed' })); process.exit(0); });
createInterface({ input: process.stdin }).on('line', (l) => s.write(l + '\\n'));
`,
};
const quiet = new Logging({ levels: 'off' });

async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 8000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** ztunnel's side of ZDS, recording what the agent sent. */
class StandInZtunnel {
  readonly adds: { uid: string; info: ZdsWorkloadInfo; netnsInode: number }[] = [];
  readonly dels: string[] = [];
  readonly snapshots: ZdsSnapshot[] = [];
  readonly proxies = new Set<string>();
  readonly client: ZdsClient;
  /** The in-pod data path (listeners in each pod netns), when started. */
  dataPath: HarnessProcess | undefined;
  netnsOf: (info: ZdsWorkloadInfo) => string = () => '';

  constructor(path: string) {
    this.client = new ZdsClient({
      path,
      initialBackoffMs: 10,
      maxBackoffMs: 100,
      log: quiet.logger('ztunnel'),
      handler: {
        onAdd: async (uid, info, fd) => {
          this.adds.push({ uid, info, netnsInode: netnsInode(fd) });
          closeFd(fd);
          // Like ztunnel, ack only once the pod's listeners exist.
          if (this.dataPath && !this.proxies.has(uid)) {
            this.dataPath.stdin?.write(`${JSON.stringify({ op: 'add', uid, netns: this.netnsOf(info) })}\n`);
            const e = await this.dataPath.waitForJson(
              (x) => (x.event === 'added' || x.event === 'error') && x.uid === uid,
              { timeoutMs: 4000 },
            );
            if (e.event === 'error') throw new Error(`data path add failed: ${String(e.message)}`);
          }
          this.proxies.add(uid);
        },
        onKeep: (uid) => {
          this.proxies.add(uid);
        },
        onDel: (uid) => {
          this.dels.push(uid);
          this.dataPath?.stdin?.write(`${JSON.stringify({ op: 'remove', uid })}\n`);
          this.proxies.delete(uid);
        },
        onSnapshotSent: (s) => {
          this.snapshots.push(s);
          for (const uid of s.stale(this.proxies)) this.proxies.delete(uid);
        },
      },
    });
  }
}

suite('istio-cni node agent', { skip: isRoot ? false : 'needs root (network namespaces)' }, () => {
  let dir: string;
  let manifests: string;
  let runDir: string;
  let mesh: Harness;
  let node: MeshNode;
  let agent: CniAgent;
  let ztunnel: StandInZtunnel;

  const agentConfig = () =>
    loadAgentConfig({
      NODE_NAME: 'node1',
      CONFIG_SOURCE: 'local',
      LOCAL_MANIFESTS_DIR: manifests,
      CNI_AGENT_RUN_DIR: runDir,
      ZTUNNEL_UDS: join(runDir, 'ztunnel.sock'),
      HOST_NETNS_PATH: `/var/run/netns/${node.netnsName}`,
      CNI_INSTALL: 'false',
      AMBIENT_IPV6: 'false',
      HEALTH_BIND_ADDRESS: '127.0.0.1',
      HEALTH_PORT: '0',
      METRICS_BIND_ADDRESS: '127.0.0.1',
      METRICS_PORT: '0',
    });

  const startAgent = async () => {
    const a = new CniAgent({ config: agentConfig(), log: quiet.logger('cni-agent'), localRescanMs: 500 });
    await a.start();
    return a;
  };

  const writeNamespace = (name: string, labels: Record<string, string> = {}) =>
    writeFile(
      join(manifests, `ns-${name}.yaml`),
      JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } }),
    );

  /** Writes the Pod (as the API server would have it), then runs its sandbox through CNI. */
  const addPod = async (
    namespace: string,
    name: string,
    labels: Record<string, string> = {},
  ): Promise<Pod> => {
    const uid = randomUUID();
    await writeFile(
      join(manifests, `pod-${namespace}-${name}.yaml`),
      [
        'apiVersion: v1',
        'kind: Pod',
        'metadata:',
        `  name: ${name}`,
        `  namespace: ${namespace}`,
        `  uid: ${uid}`,
        `  labels: ${JSON.stringify(labels)}`,
        'spec:',
        '  nodeName: node1',
        `  serviceAccountName: sa-${name}`,
        '',
      ].join('\n'),
    );
    return node.addPod({ name, namespace, uid, serviceAccount: `sa-${name}` });
  };

  const annotation = (p: Pod): string | undefined => {
    const text = readFileSync(join(manifests, `pod-${p.namespace}-${p.name}.yaml`), 'utf8');
    const m = new RegExp(`${REDIRECTION_ANNOTATION.replace(/[./]/g, '\\$&')}: (\\w+)`).exec(text);
    return m?.[1];
  };
  const hasRules = async (p: Pod) =>
    (await listRuleset(p.sandbox.attachment.netnsPath)).includes(POD_NAT_TABLE);
  const podCheck = (p: Pod) =>
    agent.redirector.check({ uid: p.uid, netnsPath: p.sandbox.attachment.netnsPath, pod: { ips: [p.ip] } });
  const probeIps = async () =>
    (await listProbeSetEntries(`/var/run/netns/${node.netnsName}`)).map((e) => `${e.ip} ${e.uid}`);

  before(async () => {
    buildPlugin({ quiet: true });
    dir = await mkdtemp(join(tmpdir(), 'icni-agent-'));
    manifests = join(dir, 'manifests');
    runDir = join(dir, 'run');
    await mkdir(manifests);
    mesh = await Harness.create({
      nodes: 1,
      chain: [
        {
          type: 'istio-cni',
          binDir: PLUGIN_BUILD_DIR,
          config: {
            cni_agent_run_dir: runDir,
            exclude_namespaces: ['kube-system'],
            plugin_log_level: 'none',
          },
        },
      ],
    });
    node = mesh.node('node1');
    await writeNamespace('mesh', { 'istio.io/dataplane-mode': 'ambient' });
    await writeNamespace('plain');
    await writeNamespace('later');
    agent = await startAgent();
    ztunnel = new StandInZtunnel(join(runDir, 'ztunnel.sock'));
    ztunnel.dataPath = node.spawnNode(STANDIN);
    ztunnel.netnsOf = (info) => `/var/run/netns/${mesh.key}-pod-${info.namespace}_${info.name}`;
    await ztunnel.dataPath.waitForLine('"ready"');
    ztunnel.client.start();
    await waitFor('ztunnel ready', () => ztunnel.client.ready);
  });

  after(async () => {
    await ztunnel?.client.stop({ mode: 'immediate', force: AbortSignal.abort(), deadline: Date.now() });
    await agent?.stop();
    await mesh?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('pods in an ambient namespace are enrolled', async () => {
    const p = await addPod('mesh', 'web-0');
    // ADD returned: rules in place and ztunnel acked, before the pod could run.
    const add = ztunnel.adds.find((a) => a.uid === p.uid);
    assert.ok(add, 'ZDS add received');
    assert.deepEqual(add.info, { name: 'web-0', namespace: 'mesh', serviceAccount: 'sa-web-0' });
    assert.equal(add.netnsInode, statSync(p.sandbox.attachment.netnsPath).ino);
    const check = await podCheck(p);
    assert.deepEqual(check.problems, []);
    assert.ok(check.ok);
    assert.ok((await probeIps()).includes(`${p.ip} ${p.uid}`));
    assert.equal(annotation(p), 'enabled');
    // The pod label alone also enrolls, in any namespace.
    const q = await addPod('plain', 'labelled-0', { 'istio.io/dataplane-mode': 'ambient' });
    assert.ok(ztunnel.adds.some((a) => a.uid === q.uid));
    assert.equal(annotation(q), 'enabled');
    const metrics = await (await fetch(`http://127.0.0.1:${agent.ports.metrics}/metrics`)).text();
    assert.match(metrics, /istio_cni_enrolled_pods 2/);
    assert.match(metrics, /istio_cni_zds_connections 1/);
    const ready = await fetch(`http://127.0.0.1:${agent.ports.health}/readyz`);
    assert.equal(ready.status, 200);
  });

  test('pods elsewhere are untouched', async () => {
    const before = ztunnel.adds.length;
    const p = await addPod('plain', 'batch-0');
    const opted = await addPod('mesh', 'opted-out-0', { 'istio.io/dataplane-mode': 'none' });
    assert.equal(ztunnel.adds.length, before);
    for (const x of [p, opted]) {
      assert.equal(await hasRules(x), false);
      assert.equal(annotation(x), undefined);
      assert.ok(!(await probeIps()).some((e) => e.startsWith(`${x.ip} `)));
    }
  });

  test('labelling a namespace later enrolls its running pods without a restart, and removing the label unenrolls them', async () => {
    const p = await addPod('later', 'app-0');
    assert.equal(await hasRules(p), false);
    await writeNamespace('later', { 'istio.io/dataplane-mode': 'ambient' });
    await waitFor('pod enrolled after the namespace label', () => ztunnel.adds.some((a) => a.uid === p.uid));
    await waitFor('annotation enabled', () => annotation(p) === 'enabled');
    assert.ok((await podCheck(p)).ok);
    assert.ok((await probeIps()).includes(`${p.ip} ${p.uid}`));
    await writeNamespace('later');
    await waitFor('ZDS del', () => ztunnel.dels.includes(p.uid));
    await waitFor('annotation removed', () => annotation(p) === undefined);
    assert.equal(await hasRules(p), false);
    assert.ok(!(await probeIps()).some((e) => e.startsWith(`${p.ip} `)));
    // The sandbox is still there and the pod still works outside the mesh.
    await p.check();
  });

  test('with the agent down, non-ambient pods still start, and ambient pods do not start outside the mesh', async () => {
    await agent.stop();
    try {
      const plain = await addPod('plain', 'while-down-0');
      assert.ok(plain.ip);
      const err = await addPod('mesh', 'while-down-1').then(
        () => assert.fail('an ambient pod must not start while the agent is down'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof CniError, String(err));
      assert.equal(err.cniCode, CNI_ERROR_CODE.tryAgainLater);
      assert.equal(mesh.pod('mesh', 'while-down-1'), undefined);
    } finally {
      agent = await startAgent();
    }
    // Once the agent is back, the runtime's retry succeeds and the pod is enrolled.
    await waitFor('ztunnel reconnected', () => ztunnel.client.ready);
    const retried = await node.addPod({
      name: 'while-down-1',
      namespace: 'mesh',
      uid: agent.store.get('Pod', 'mesh', 'while-down-1')?.metadata.uid as string,
      serviceAccount: 'sa-while-down-1',
    });
    assert.ok(ztunnel.adds.some((a) => a.uid === retried.uid));
    assert.ok((await podCheck(retried)).ok);
  });

  test('after an agent restart, existing traffic is unaffected and the rules are reconciled', async () => {
    const intact = await addPod('mesh', 'intact-0');
    const broken = await addPod('mesh', 'broken-0');
    const server = await addPod('mesh', 'server-0');
    const serverApp = server.spawnNode(APP, ['serve', '--port', String(APP_PORT)]);
    await serverApp.waitForLine('"listening"');
    // A connection through the mesh (client 15001 → stand-in → server 15006 → app), kept open.
    const conn = intact.spawnNode(LONG_LIVED_CLIENT, [server.ip, String(APP_PORT)]);
    const conversation = async (msg: string) => {
      conn.stdin?.write(`${msg}\n`);
      await conn.waitForJson((e) => e.event === 'echo' && e.data === msg, { timeoutMs: 4000 });
    };
    await conn.waitForLine('"connected"');
    await conversation('before-restart');
    const viaMesh = ztunnel.dataPath?.stdout.includes('accepted');
    assert.ok(viaMesh, 'the connection went through the in-pod data path');
    // Rule handles tell whether anything was deleted and re-added; counters move with traffic.
    const rulesOf = async (p: Pod) =>
      (await listRuleset(p.sandbox.attachment.netnsPath)).replace(/\{"counter": \{[^}]*\}\}, /g, '');
    const rulesBefore = await rulesOf(intact);
    const delsBefore = ztunnel.dels.length;
    const snapshotsBefore = ztunnel.snapshots.length;
    await agent.stop();
    // Rules lost while the agent was down (a node reboot, someone flushing the ruleset).
    await removeNftablesRedirection(broken.sandbox.attachment.netnsPath, { ipv6: false });
    assert.equal(await hasRules(broken), false);
    // Traffic of enrolled pods does not need the agent.
    await conversation('while-down');
    agent = await startAgent();
    const report = agent.reconcileReport;
    assert.ok(report);
    assert.ok(report.repaired.includes(broken.uid), JSON.stringify(report));
    assert.ok(!report.repaired.includes(intact.uid));
    assert.deepEqual(report.failed, []);
    assert.ok((await podCheck(broken)).ok);
    // The intact pod's rules were not touched (not removed and re-added).
    assert.ok(
      (await rulesOf(intact)) === rulesBefore,
      'the intact pod ruleset (with its handles) is unchanged',
    );
    // ztunnel reconnected and got a snapshot naming every enrolled pod: no proxy is dropped.
    await waitFor('new snapshot', () => ztunnel.snapshots.length > snapshotsBefore && ztunnel.client.ready);
    const snap = ztunnel.snapshots.at(-1) as ZdsSnapshot;
    for (const p of [intact, broken]) {
      assert.ok(snap.has(p.uid), `snapshot names ${p.name}`);
      assert.ok(ztunnel.proxies.has(p.uid));
    }
    assert.equal(ztunnel.dels.length, delsBefore);
    // The connection opened before the restart still carries data; a new one works too.
    await conversation('after-restart');
    assert.ok(!conn.stdout.includes('"closed"'));
    const r = await intact.execNode(
      APP,
      ['client', '--host', server.ip, '--port', String(APP_PORT), '--message', 'new'],
      {
        timeoutMs: 10_000,
      },
    );
    assert.match(r.stdout, /"received":"new"/);
    conn.kill();
  });

  test('with ztunnel down, an ambient pod does not start and is annotated pending; it starts once ztunnel is back', async () => {
    await ztunnel.client.stop({ mode: 'immediate', force: AbortSignal.abort(), deadline: Date.now() });
    await waitFor('agent saw ztunnel go', () => agent.zds.connectionCount === 0);
    const uid = randomUUID();
    await writeFile(
      join(manifests, 'pod-mesh-no-ztunnel-0.yaml'),
      `apiVersion: v1\nkind: Pod\nmetadata:\n  name: no-ztunnel-0\n  namespace: mesh\n  uid: ${uid}\nspec:\n  nodeName: node1\n`,
    );
    const err = await node.addPod({ name: 'no-ztunnel-0', namespace: 'mesh', uid }).then(
      () => assert.fail('ADD must fail while no ztunnel accepts the pod'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof CniError, String(err));
    assert.equal(err.cniCode, CNI_ERROR_CODE.tryAgainLater);
    assert.match(err.msg, /ztunnel did not accept pod mesh\/no-ztunnel-0/);
    assert.equal(mesh.pod('mesh', 'no-ztunnel-0'), undefined);
    const text = () => readFileSync(join(manifests, 'pod-mesh-no-ztunnel-0.yaml'), 'utf8');
    assert.match(text(), /ambient\.istio\.io\/redirection: pending/);
    const metrics = await (await fetch(`http://127.0.0.1:${agent.ports.metrics}/metrics`)).text();
    assert.match(metrics, /istio_cni_enrollment_failures_total\{reason="zds"\} [1-9]/);
    ztunnel.client.start();
    await waitFor('ztunnel back', () => ztunnel.client.ready);
    const p = await node.addPod({ name: 'no-ztunnel-0', namespace: 'mesh', uid });
    assert.ok(ztunnel.proxies.has(p.uid));
    assert.match(text(), /ambient\.istio\.io\/redirection: enabled/);
  });

  test('a deleted pod is removed from the mesh', async () => {
    const p = await addPod('mesh', 'gone-0');
    await p.remove();
    await rm(join(manifests, `pod-mesh-gone-0.yaml`));
    await waitFor('ZDS del of the deleted pod', () => ztunnel.dels.includes(p.uid));
    assert.ok(!(await probeIps()).some((e) => e.endsWith(` ${p.uid}`)));
    assert.equal(agent.cache.get(p.uid), undefined);
  });

  /** A second agent with the installer on, for another node name (so it leaves the pods alone). */
  const startInstallingAgent = async (name: string, conflist: string) => {
    const base = join(dir, name);
    const conf = join(base, 'net.d');
    const bin = join(base, 'bin');
    const m = join(base, 'manifests');
    await Promise.all([conf, bin, m].map((d) => mkdir(d, { recursive: true })));
    await writeFile(join(conf, '10-bridge.conflist'), conflist);
    const a = new CniAgent({
      config: loadAgentConfig({
        NODE_NAME: `install-${name}`,
        CONFIG_SOURCE: 'local',
        LOCAL_MANIFESTS_DIR: m,
        CNI_AGENT_RUN_DIR: join(base, 'run'),
        ZTUNNEL_UDS: join(base, 'run', 'ztunnel.sock'),
        HOST_NETNS_PATH: `/var/run/netns/${node.netnsName}`,
        CNI_BIN_DIR: bin,
        CNI_CONF_DIR: conf,
        CNI_PLUGIN_BINARY: join(PLUGIN_BUILD_DIR, 'istio-cni'),
        AMBIENT_IPV6: 'false',
        HEALTH_BIND_ADDRESS: '127.0.0.1',
        HEALTH_PORT: '0',
        METRICS_BIND_ADDRESS: '127.0.0.1',
        METRICS_PORT: '0',
      }),
      log: quiet.logger('cni-agent'),
    });
    await a.start();
    return { agent: a, primary: join(conf, '10-bridge.conflist'), bin };
  };
  const BRIDGE_LIST = {
    cniVersion: '1.0.0',
    name: 'pods',
    plugins: [{ type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', subnet: '10.250.0.0/24' } }],
  };
  const pluginTypes = (path: string): string[] =>
    (JSON.parse(readFileSync(path, 'utf8')) as { plugins: { type: string }[] }).plugins.map((p) => p.type);

  test('when the primary CNI rewrites its conflist, the plugin is chained again', async () => {
    const { agent: a, primary, bin } = await startInstallingAgent('rechain', JSON.stringify(BRIDGE_LIST));
    try {
      assert.deepEqual(pluginTypes(primary), ['bridge', 'istio-cni']);
      assert.ok(readFileSync(join(bin, 'istio-cni')).length > 0);
      const entry = (JSON.parse(readFileSync(primary, 'utf8')) as { plugins: Record<string, unknown>[] })
        .plugins[1];
      assert.equal(entry?.cni_agent_run_dir, join(dir, 'rechain', 'run'));
      assert.equal((await fetch(`http://127.0.0.1:${a.ports.health}/readyz`)).status, 200);
      await writeFile(primary, JSON.stringify(BRIDGE_LIST));
      await waitFor('re-chained', () => pluginTypes(primary).join() === 'bridge,istio-cni');
      await waitFor(
        'ready again',
        async () => (await fetch(`http://127.0.0.1:${a.ports.health}/readyz`)).status === 200,
      );
    } finally {
      await a.stop();
    }
  });

  test('a malformed conflist is not touched', async () => {
    const malformed = '{"name": "pods", "plugins": [';
    const { agent: a, primary } = await startInstallingAgent('malformed', malformed);
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(readFileSync(primary, 'utf8'), malformed);
      const ready = await fetch(`http://127.0.0.1:${a.ports.health}/readyz`);
      assert.equal(ready.status, 503);
      assert.match(await ready.text(), /cni plugin installed/);
    } finally {
      await a.stop();
    }
  });
});

// The installer's own cases (owned config, .conf conversion, every kind of malformed file,
// concurrent writers) are in cni/test/install-installer.test.ts.
