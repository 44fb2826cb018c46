/**
 * The whole ztunnel in process, in local-config mode (no istiod): workloads, services and policies
 * from a LOCAL_XDS_PATH file, certificates from an in-process test CA, and a real ZDS node agent
 * (ZdsServer) enrolling pods whose network namespaces this test creates. Needs root.
 */
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { Identity } from '@ambient/common/identity';
import {
  type CertificateFetcher,
  type WorkloadCertificate,
  workloadCertificateFromResponse,
} from '@ambient/common/identity/ca-client';
import { TestCa } from '@ambient/common/testing/pki';
import { ZdsServer, type ZdsSnapshotEntry } from '@ambient/common/zds';
import { closeFd } from '@ambient/native';
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

const NODE = 'node-a';
const WEB = { uid: 'web-1-uid', info: { name: 'web-1', namespace: 'demo', serviceAccount: 'web' } };
const LATE = { uid: 'late-1-uid', info: { name: 'late-1', namespace: 'demo', serviceAccount: 'late' } };
const EXTRA = { uid: 'extra-1-uid', info: { name: 'extra-1', namespace: 'demo', serviceAccount: 'extra' } };

function workloadYaml(name: string, sa: string, ip: string): string {
  return `  - uid: Kubernetes//Pod/demo/${name}
    name: ${name}
    namespace: demo
    serviceAccount: ${sa}
    addresses: ["${ip}"]
    node: ${NODE}
    tunnelProtocol: HBONE
    canonicalName: ${sa}
    workloadName: ${sa}
    services:
      demo/web.demo.svc.cluster.local:
        ports: [{ servicePort: 80, targetPort: 8080 }]
    authorizationPolicies: [demo/allow-db]
`;
}

function localConfig(workloads: string[]): string {
  return `workloads:
${workloads.join('')}
services:
  - name: web
    namespace: demo
    hostname: web.demo.svc.cluster.local
    addresses: [{ network: "", address: "10.96.0.10" }]
    ports: [{ servicePort: 80, targetPort: 8080 }]
policies:
  - name: allow-db
    namespace: demo
    scope: WORKLOAD_SELECTOR
    action: ALLOW
    rules:
      - clauses:
          - matches:
              - principals: [{ exact: cluster.local/ns/demo/sa/db }]
`;
}

/** Issues certificates from an in-process CA, checked exactly as a CA response is. */
class TestCaFetcher implements CertificateFetcher {
  readonly #ca: TestCa;
  readonly requested: string[] = [];
  constructor(ca: TestCa) {
    this.#ca = ca;
  }
  async fetchCertificate(identity: Identity): Promise<WorkloadCertificate> {
    this.requested.push(`${identity.namespace}/${identity.serviceAccount}`);
    const issued = await this.#ca.issue({ identity, freshKey: true });
    return workloadCertificateFromResponse({
      identity,
      keyPem: issued.key,
      publicKeySpki: createPublicKey(issued.key).export({ type: 'spki', format: 'der' }),
      certChain: issued.caResponse,
      now: Date.now(),
    });
  }
}

function metric(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('ztunnel in local-config mode with a node agent', { skip: !isRoot && 'needs root' }, () => {
  const tmp = tempDir('local');
  const sock = tmp.path('ztunnel.sock');
  const localPath = tmp.path('local.yaml');
  const logs = new CapturedLogs('info');
  const pods: PodNetns[] = [];
  let web: PodNetns;
  let late: PodNetns;
  let ztunnel: Ztunnel;
  let agent: ZdsServer;
  let snapshot: ZdsSnapshotEntry[] = [];
  let fetcher: TestCaFetcher;

  function newAgent(): ZdsServer {
    return new ZdsServer({ path: sock, snapshot: () => snapshot, log: logs.logging.logger('agent') });
  }

  /** Sends an Add with a fresh fd to the pod's netns, as the node agent does; closes our copy. */
  async function add(pod: { uid: string; info: typeof WEB.info }, netns: PodNetns): Promise<void> {
    const fd = netns.fd();
    try {
      await agent.podAdded(pod.uid, pod.info, fd);
    } finally {
      closeFd(fd);
    }
  }

  const ports = () => ztunnel.ports();
  const dump = async () =>
    JSON.parse((await http(ports().admin, '/config_dump')).text) as {
      workloads: Record<string, unknown>[];
      services: Record<string, unknown>[];
      policies: Record<string, unknown>[];
      certificates: { identity: string; state: string; certChain: Record<string, unknown>[] }[];
      workloadState: Record<string, { state: string; info: Record<string, string>; error?: string }>;
    };
  const metrics = async () => (await http(ports().stats, '/metrics')).text;

  before(async () => {
    sweepLeftoverNetns();
    web = new PodNetns('10.77.0.10');
    late = new PodNetns('10.77.0.11');
    pods.push(web, late);
    writeFileSync(localPath, localConfig([workloadYaml('web-1', 'web', '10.77.0.10')]));
    fetcher = new TestCaFetcher(await TestCa.create());
    const config = loadConfig({
      LOCAL_XDS_PATH: localPath,
      CA_ADDRESS: '',
      NODE_NAME: NODE,
      INPOD_UDS: sock,
      ADMIN_PORT: '0',
      STATS_BIND_ADDRESS: '127.0.0.1',
      STATS_PORT: '0',
      READINESS_BIND_ADDRESS: '127.0.0.1',
      READINESS_PORT: '0',
      CONNECTION_TERMINATION_DEADLINE: '1s',
    });
    ztunnel = Ztunnel.create(config, {
      logging: logs.logging,
      certificateFetcher: fetcher,
      inpod: { retryIntervalMs: 400 },
    });
    await ztunnel.start();
    agent = newAgent();
  });

  after(async () => {
    await ztunnel?.stop({ mode: 'immediate' });
    await agent?.stop();
    for (const p of pods) p.delete();
    tmp.remove();
  });

  it('is not ready until the node agent has sent its snapshot', async () => {
    const before = await http(ports().readiness, '/healthz/ready');
    assert.equal(before.status, 503);
    assert.match(before.text, /workload proxy manager/);
    assert.doesNotMatch(before.text, /local config/, 'the local config is applied at start');
    agent.start();
    await eventually('ready', async () => (await http(ports().readiness, '/healthz/ready')).status === 200);
    assert.equal((await http(ports().readiness, '/healthz/ready')).text, 'ready\n');
  });

  it('starts a pod proxy inside its netns on Add, acks, and prefetches its certificate', async () => {
    await add(WEB, web);
    for (const port of [15001, 15006, 15008]) {
      assert.equal(await web.listening(port), true, `port ${port} listens inside the pod netns`);
    }
    assert.equal(await web.listening(15008, web.ip), true, 'on the pod IP as well');
    assert.equal(await late.listening(15008), false, 'not in another pod');
    const d = await dump();
    assert.equal(d.workloadState[WEB.uid]?.state, 'Up');
    assert.deepEqual(d.workloadState[WEB.uid]?.info, {
      name: 'web-1',
      namespace: 'demo',
      trustDomain: 'cluster.local',
      serviceAccount: 'web',
    });
    const m = await metrics();
    assert.equal(metric(m, 'workload_manager_active_proxy_count'), 1);
    assert.equal(metric(m, 'workload_manager_pending_proxy_count'), 0);
    assert.equal(metric(m, 'workload_manager_proxies_started_total'), 1);
    assert.ok(fetcher.requested.includes('demo/web'), 'the certificate of the local workload is prefetched');
    const certs = await eventually('certificate available', async () =>
      (await dump()).certificates.find(
        (c) => c.identity === 'spiffe://cluster.local/ns/demo/sa/web' && c.state === 'Available',
      ),
    );
    assert.equal(certs.certChain.length, 1);
  });

  it('serves /config_dump with the field names istioctl ztunnel-config reads', async () => {
    const d = await dump();
    assert.deepEqual(
      Object.keys(d).filter((k) =>
        ['workloads', 'services', 'policies', 'certificates', 'workloadState'].includes(k),
      ),
      ['workloads', 'services', 'policies', 'certificates', 'workloadState'],
    );
    const w = d.workloads.find((x) => x.uid === 'Kubernetes//Pod/demo/web-1');
    assert.ok(w, 'the local workload is dumped');
    for (const key of [
      'uid',
      'workloadIps',
      'protocol',
      'name',
      'namespace',
      'serviceAccount',
      'node',
      'status',
    ]) {
      assert.ok(key in w, `workload has ${key}`);
    }
    assert.deepEqual(w.workloadIps, ['10.77.0.10']);
    assert.equal(w.protocol, 'HBONE');
    assert.equal(w.node, NODE);
    assert.deepEqual(w.authorizationPolicies, ['demo/allow-db']);
    const s = d.services[0] ?? assert.fail('a service');
    assert.equal(s.hostname, 'web.demo.svc.cluster.local');
    assert.deepEqual(s.vips, ['/10.96.0.10']);
    assert.deepEqual(s.ports, { 80: 8080 });
    assert.ok(isObjectWith(s.endpoints, 'Kubernetes//Pod/demo/web-1'), 'endpoints keyed by workload uid');
    const p = d.policies[0] ?? assert.fail('a policy');
    assert.equal(p.name, 'allow-db');
    assert.equal(p.action, 'Allow');
    assert.equal(p.scope, 'WorkloadSelector');
    const cert = d.certificates.find((c) => c.identity.endsWith('/sa/web'));
    const leaf = cert?.certChain[0] ?? assert.fail('a certificate chain');
    assert.deepEqual(Object.keys(leaf).sort(), ['expirationTime', 'pem', 'serialNumber', 'validFrom']);
    assert.match(String(leaf.serialNumber), /^\d+$/, 'decimal serial, as istioctl parses it');
  });

  it('starts the proxy of a pod whose workload xDS has not sent yet, and serves it once it arrives', async () => {
    // The CNI plugin enrolls a pod during sandbox setup, before the API server knows its IP.
    await add(LATE, late);
    assert.equal(agent.connectionCount, 1);
    assert.equal((await dump()).workloadState[LATE.uid]?.state, 'Up');
    assert.equal(await late.listening(15008), true);
    assert.equal((await http(ports().readiness, '/healthz/ready')).status, 200);
    assert.equal(metric(await metrics(), 'workload_manager_pending_proxy_count'), 0);
    assert.equal((await dump()).workloadState[LATE.uid]?.info.trustDomain, '', 'not known before xDS has it');

    writeFileSync(
      localPath,
      localConfig([workloadYaml('web-1', 'web', '10.77.0.10'), workloadYaml('late-1', 'late', '10.77.0.11')]),
    );
    await ztunnel.stateManager.local?.reload();
    await eventually(
      'the workload arrived',
      async () => (await dump()).workloadState[LATE.uid]?.info.trustDomain === 'cluster.local',
    );
  });

  it('replaces the proxy when a pod comes back with a new netns (same uid)', async () => {
    const web2 = new PodNetns('10.77.0.10');
    pods.push(web2);
    await add(WEB, web2);
    assert.equal(await web2.listening(15008), true, 'the new netns is served');
    await eventually('old netns released', async () => !(await web.listening(15008)));
    await add(WEB, web2);
    assert.equal(await web2.listening(15008), true, 'an Add for the same netns is a no-op');
    web = web2;
  });

  it('tears a deleted pod down at once', async () => {
    const stoppedBefore = metric(await metrics(), 'workload_manager_proxies_stopped_total') ?? 0;
    await agent.podDeleted(LATE.uid);
    assert.equal(await late.listening(15008), false, 'listeners closed by the time the delete is acked');
    assert.equal(await late.listening(15001), false);
    const m = await metrics();
    assert.equal(metric(m, 'workload_manager_proxies_stopped_total'), stoppedBefore + 1);
    assert.equal((await dump()).workloadState[LATE.uid], undefined);
  });

  it('drops the proxies of pods missing from the snapshot after the node agent restarts', async () => {
    const extra = new PodNetns('10.77.0.12');
    pods.push(extra);
    // No workload for it in the local config: its proxy runs anyway, and the snapshot drops it.
    await add(EXTRA, extra);
    assert.equal((await dump()).workloadState[EXTRA.uid]?.state, 'Up');
    await agent.stop();
    snapshot = [{ uid: WEB.uid, info: WEB.info, netns: web.path }];
    agent = newAgent();
    agent.start();
    await eventually('snapshot reconciled', async () => {
      const state = (await dump()).workloadState;
      return state[EXTRA.uid] === undefined && state[WEB.uid]?.state === 'Up';
    });
    await eventually(
      'ready after the snapshot',
      async () => (await http(ports().readiness, '/healthz/ready')).status === 200,
    );
    assert.equal(await web.listening(15008), true, 'the pod in the snapshot keeps its proxy');
  });

  it('shows and changes log levels through /logging', async () => {
    const before = await http(ports().admin, '/logging');
    assert.equal(before.status, 200);
    assert.match(before.text, /^current log level is info/);
    const changed = await http(ports().admin, '/logging?level=xds:debug', { method: 'POST' });
    assert.equal(changed.status, 200, changed.text);
    assert.match(changed.text, /current log level is info,xds:debug/);
    assert.equal(ztunnel.logging.levelOf('xds'), 'debug');
    const bad = await http(ports().admin, '/logging?level=xds:loud', { method: 'POST' });
    assert.equal(bad.status, 400);
    assert.match(bad.text, /"loud"/);
    assert.equal(ztunnel.logging.levelOf('xds'), 'debug', 'a bad spec changes nothing');
    const reset = await http(ports().admin, '/logging?reset', { method: 'POST' });
    assert.match(reset.text, /current log level is info\n/);
    assert.equal((await http(ports().admin, '/logging?level=debug')).status, 405, 'GET cannot change levels');
  });

  it('exports istio_build and process metrics on /metrics and /stats/prometheus', async () => {
    const m = await metrics();
    assert.match(m, /istio_build\{component="ztunnel",tag="[^"]+"\} 1/);
    assert.match(m, /process_cpu_user_seconds_total/);
    assert.equal((await http(ports().stats, '/stats/prometheus')).status, 200);
  });

  it('stops gracefully on POST /quitquitquit', async () => {
    assert.equal((await http(ports().admin, '/quitquitquit')).status, 405, 'only POST');
    const res = await http(ports().admin, '/quitquitquit', { method: 'POST' });
    assert.equal(res.status, 200);
    await ztunnel.stopped;
    assert.equal(await web.listening(15008), false, 'the pod listeners are closed');
  });
});

function isObjectWith(v: unknown, key: string): boolean {
  return typeof v === 'object' && v !== null && key in v;
}
