/**
 * The in-pod workload manager's edge cases, on the real pieces (ztunnel in local-config mode, a
 * ZdsServer as the node agent, pod network namespaces): a proxy that fails to bind is NACKed and
 * retried until it can; Keep preserves a running proxy across a node-agent restart; a pod deleted
 * while pending is never started. Needs root.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ZdsError, ZdsServer, type ZdsSnapshotEntry } from '@ambient/common/zds';
import { closeFd, listenInNetns } from '@ambient/native';
import { Ztunnel } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import {
  CapturedLogs,
  eventually,
  http,
  isRoot,
  PodNetns,
  sweepLeftoverNetns,
  tempDir,
} from './app-fixtures.ts';

const NODE = 'node-b';
const RETRY_MS = 300;

function pod(name: string) {
  return { uid: `${name}-uid`, info: { name, namespace: 'demo', serviceAccount: name } };
}
const BUSY = pod('busy-1');
const KEPT = pod('kept-1');
const GONE = pod('gone-1');
const EARLY = pod('early-1');

function workload(name: string, ip: string): string {
  return `  - uid: Kubernetes//Pod/demo/${name}
    name: ${name}
    namespace: demo
    serviceAccount: ${name}
    addresses: ["${ip}"]
    node: ${NODE}
    tunnelProtocol: HBONE
`;
}

describe('in-pod workload manager', { skip: !isRoot && 'needs root' }, () => {
  const tmp = tempDir('inpod');
  const sock = tmp.path('ztunnel.sock');
  const localPath = tmp.path('local.yaml');
  const logs = new CapturedLogs('warn');
  const netns: PodNetns[] = [];
  let ztunnel: Ztunnel;
  let agent: ZdsServer;
  let snapshot: ZdsSnapshotEntry[] = [];

  const newAgent = () =>
    new ZdsServer({ path: sock, snapshot: () => snapshot, log: logs.logging.logger('agent') });
  async function add(p: ReturnType<typeof pod>, ns: PodNetns): Promise<void> {
    const fd = ns.fd();
    try {
      await agent.podAdded(p.uid, p.info, fd);
    } finally {
      closeFd(fd);
    }
  }
  const state = async () =>
    JSON.parse((await http(ztunnel.ports().admin, '/workloadmanager')).text) as Record<
      string,
      { state: string; error?: string }
    >;

  before(async () => {
    sweepLeftoverNetns();
    writeFileSync(
      localPath,
      `workloads:\n${workload('busy-1', '10.80.0.10')}${workload('kept-1', '10.80.0.11')}`,
    );
    ztunnel = Ztunnel.create(
      loadConfig({
        LOCAL_XDS_PATH: localPath,
        CA_ADDRESS: '',
        NODE_NAME: NODE,
        INPOD_UDS: sock,
        ADMIN_PORT: '0',
        STATS_BIND_ADDRESS: '127.0.0.1',
        STATS_PORT: '0',
        READINESS_BIND_ADDRESS: '127.0.0.1',
        READINESS_PORT: '0',
        CONNECTION_TERMINATION_DEADLINE: '500ms',
      }),
      { logging: logs.logging, inpod: { retryIntervalMs: RETRY_MS } },
    );
    await ztunnel.start();
    agent = newAgent();
    agent.start();
    await eventually(
      'ready',
      async () => (await http(ztunnel.ports().readiness, '/healthz/ready')).status === 200,
    );
  });

  after(async () => {
    await ztunnel?.stop({ mode: 'immediate' });
    await agent?.stop();
    for (const n of netns) n.delete();
    tmp.remove();
  });

  it('NACKs a proxy that cannot bind, retries, and starts once the port is free', async () => {
    const ns = new PodNetns('10.80.0.10');
    netns.push(ns);
    // Something in the pod already holds 15008 without SO_REUSEPORT.
    const blocker = createServer();
    const fd = ns.fd();
    try {
      await listenInNetns(blocker, { netnsFd: fd, address: '0.0.0.0', port: 15008, reusePort: false });
    } finally {
      closeFd(fd);
    }
    const err = await add(BUSY, ns).then(
      () => assert.fail('the add must be refused'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ZdsError && err.code === 'ZDS_NACK', String(err));
    assert.match(err.message, /failed to start the proxy of pod demo\/busy-1/);
    assert.equal((await state())[BUSY.uid]?.state, 'Pending');
    assert.equal(
      await ns.listening(15001),
      false,
      'no half-started proxy: the other listeners are closed too',
    );
    const readiness = await http(ztunnel.ports().readiness, '/healthz/ready');
    assert.match(readiness.text, /proxy pending for pod demo\/busy-1/);
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    await eventually('retried and started', async () => (await state())[BUSY.uid]?.state === 'Up', 5000);
    assert.equal(await ns.listening(15001), true);
    await eventually(
      'ready',
      async () => (await http(ztunnel.ports().readiness, '/healthz/ready')).status === 200,
    );
  });

  it('keeps a running proxy the snapshot marks as kept after the node agent restarts', async () => {
    const ns = new PodNetns('10.80.0.11');
    netns.push(ns);
    await add(KEPT, ns);
    assert.equal((await state())[KEPT.uid]?.state, 'Up');
    await agent.stop();
    // The restarted agent cannot open either netns: both are sent as Keep.
    snapshot = [
      { uid: KEPT.uid, info: KEPT.info },
      { uid: BUSY.uid, info: BUSY.info },
    ];
    agent = newAgent();
    agent.start();
    await eventually('snapshot handled', async () => agent.connections()[0]?.phase === 'ready');
    const s = await state();
    assert.equal(s[KEPT.uid]?.state, 'Up');
    assert.equal(s[BUSY.uid]?.state, 'Up');
    assert.equal(await ns.listening(15008), true, 'the kept pod is still served');
  });

  it('never starts a pod deleted while its start is pending', async () => {
    const ns = new PodNetns('10.80.0.12');
    netns.push(ns);
    const blocker = createServer();
    const fd = ns.fd();
    try {
      await listenInNetns(blocker, { netnsFd: fd, address: '0.0.0.0', port: 15008, reusePort: false });
    } finally {
      closeFd(fd);
    }
    await add(GONE, ns).catch(() => {
      // 15008 is taken: pending.
    });
    assert.equal((await state())[GONE.uid]?.state, 'Pending');
    await agent.podDeleted(GONE.uid);
    assert.equal((await state())[GONE.uid], undefined);
    // Now the port is free; the deleted pod must stay down.
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    await new Promise((r) => setTimeout(r, RETRY_MS * 2));
    assert.equal(await ns.listening(15008), false);
    assert.equal((await state())[GONE.uid], undefined);
    assert.equal((await http(ztunnel.ports().readiness, '/healthz/ready')).status, 200);
  });

  it('starts a pod before xDS has sent its workload (the CNI enrolls before the pod has an IP)', async () => {
    const ns = new PodNetns('10.80.0.13');
    netns.push(ns);
    await add(EARLY, ns);
    assert.equal((await state())[EARLY.uid]?.state, 'Up');
    assert.equal(await ns.listening(15008), true);
    assert.equal(await ns.listening(15001), true);
    assert.equal((await http(ztunnel.ports().readiness, '/healthz/ready')).status, 200);
  });
});
