/**
 * ztunnel against the real istiod (istiod/src/app.ts in local mode, in process): delta xDS and
 * CreateCertificate over TLS with a bearer token, a node agent (ZdsServer) enrolling pods whose
 * network namespaces this test creates. Readiness, enrollment, NACK-and-retry until xDS catches
 * up, certificates issued by istiod's CA through node-scoped impersonation. Needs root.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ZdsServer } from '@ambient/common/zds';
import { Istiod } from '@ambient/istiod/src/app.ts';
import { loadConfig as loadIstiodConfig } from '@ambient/istiod/src/config.ts';
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

const ZTUNNEL_TOKEN = 'ztunnel-node-1-token-for-app-istiod-test';
const WEB = { uid: 'web-1-uid', info: { name: 'web-1', namespace: 'demo', serviceAccount: 'web' } };
const LATE = { uid: 'late-1-uid', info: { name: 'late-1', namespace: 'demo', serviceAccount: 'late' } };
const WEB_ID = 'spiffe://cluster.local/ns/demo/sa/web';

function podYaml(o: { ns: string; name: string; sa: string; node: string; ip: string; uid: string }): string {
  return `apiVersion: v1
kind: Pod
metadata:
  name: ${o.name}
  namespace: ${o.ns}
  uid: ${o.uid}
  labels:
    app: ${o.name}
  annotations:
    ambient.istio.io/redirection: enabled
spec:
  nodeName: ${o.node}
  serviceAccountName: ${o.sa}
  containers:
  - name: app
    image: app
status:
  phase: Running
  podIP: ${o.ip}
  podIPs:
  - ip: ${o.ip}
  conditions:
  - type: Ready
    status: "True"
`;
}

const NAMESPACES = `apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
`;

/** Writes a file as editors and ConfigMap volumes do: a temporary file, then a rename. */
function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

describe('ztunnel with the real istiod and a node agent', { skip: !isRoot && 'needs root' }, () => {
  const tmp = tempDir('istiod');
  const manifests = tmp.path('manifests');
  const sock = tmp.path('ztunnel.sock');
  const logs = new CapturedLogs('warn');
  let istiod: Istiod;
  let ztunnel: Ztunnel;
  let agent: ZdsServer;
  let web: PodNetns;
  let late: PodNetns;
  let pendingRightAfterStart: string[] = [];

  async function add(pod: typeof WEB, netns: PodNetns): Promise<void> {
    const fd = netns.fd();
    try {
      await agent.podAdded(pod.uid, pod.info, fd);
    } finally {
      closeFd(fd);
    }
  }
  const readiness = () => http(ztunnel.ports().readiness, '/healthz/ready');
  const dump = async () =>
    JSON.parse((await http(ztunnel.ports().admin, '/config_dump')).text) as {
      workloads: { uid: string; node: string; workloadIps: string[]; protocol: string }[];
      certificates: {
        identity: string;
        state: string;
        rootCerts: { pem: string }[];
        certChain: { pem: string }[];
      }[];
      workloadState: Record<string, { state: string }>;
    };

  before(async () => {
    sweepLeftoverNetns();
    web = new PodNetns('10.79.0.10');
    late = new PodNetns('10.79.0.11');
    mkdirSync(manifests);
    writeFileSync(join(manifests, 'namespaces.yaml'), NAMESPACES);
    writeFileSync(
      join(manifests, 'ztunnel.yaml'),
      podYaml({
        ns: 'istio-system',
        name: 'ztunnel-1',
        sa: 'ztunnel',
        node: 'node-1',
        ip: '10.0.1.2',
        uid: 'zt-1',
      }),
    );
    writeFileSync(
      join(manifests, 'web.yaml'),
      podYaml({ ns: 'demo', name: 'web-1', sa: 'web', node: 'node-1', ip: web.ip, uid: WEB.uid }),
    );
    writeFileSync(
      tmp.path('tokens.yaml'),
      `${ZTUNNEL_TOKEN}: { namespace: istio-system, serviceAccount: ztunnel, podName: ztunnel-1, podUid: zt-1 }\n`,
    );
    istiod = await Istiod.create(
      loadIstiodConfig({
        LOCAL_DATA_DIR: tmp.dir,
        LOCAL_TOKEN_FILE: tmp.path('tokens.yaml'),
        ROOT_CA_DIR: tmp.path('no-cacerts'),
        XDS_BIND_ADDRESS: '127.0.0.1',
        XDS_PORT: '0',
        MONITORING_BIND_ADDRESS: '127.0.0.1',
        MONITORING_PORT: '0',
        DEBUG_BIND_ADDRESS: '127.0.0.1',
        DEBUG_PORT: '0',
        PILOT_DEBOUNCE_AFTER: '10ms',
        LOCAL_MANIFESTS_DEBOUNCE: '20ms',
        TERMINATION_DRAIN_DURATION: '300ms',
      }),
      { logging: logs.logging },
    );
    await istiod.start();
    const istiodAddress = `https://localhost:${istiod.ports().xds}`;
    ztunnel = Ztunnel.create(
      loadConfig({
        XDS_ADDRESS: istiodAddress,
        CA_ADDRESS: istiodAddress,
        XDS_ROOT_CA: tmp.path('root-cert.pem'),
        CA_ROOT_CA: tmp.path('root-cert.pem'),
        AUTH_TOKEN: ZTUNNEL_TOKEN,
        NODE_NAME: 'node-1',
        POD_NAME: 'ztunnel-1',
        POD_NAMESPACE: 'istio-system',
        INSTANCE_IP: '10.0.1.2',
        INPOD_UDS: sock,
        ADMIN_PORT: '0',
        STATS_BIND_ADDRESS: '127.0.0.1',
        STATS_PORT: '0',
        READINESS_BIND_ADDRESS: '127.0.0.1',
        READINESS_PORT: '0',
        CONNECTION_TERMINATION_DEADLINE: '500ms',
      }),
      { logging: logs.logging, inpod: { retryIntervalMs: 400 } },
    );
    await ztunnel.start();
    pendingRightAfterStart = ztunnel.readiness.pending();
    agent = new ZdsServer({ path: sock, snapshot: () => [], log: logs.logging.logger('agent') });
  });

  after(async () => {
    await ztunnel?.stop({ mode: 'immediate' });
    await agent?.stop();
    await istiod?.stop({ mode: 'immediate' });
    web?.delete();
    late?.delete();
    tmp.remove();
  });

  it('turns ready only after both xDS types are ACKed and the node agent sent its snapshot', async () => {
    assert.deepEqual(
      pendingRightAfterStart,
      ['workload proxy manager', 'xds istio.security.Authorization', 'xds istio.workload.Address'],
      'xDS and ZDS pending at start',
    );
    const xdsDone = await eventually('both xDS types ACKed', async () => {
      const r = await readiness();
      return r.status === 503 && r.text === 'not ready, pending: workload proxy manager\n' ? r : undefined;
    });
    assert.equal(xdsDone.status, 503, 'still not ready without the ZDS snapshot');
    assert.ok(
      ztunnel.state.findWorkloadByUid('Kubernetes//Pod/demo/web-1'),
      'the WDS state from istiod is applied',
    );
    agent.start();
    await eventually('ready', async () => (await readiness()).status === 200);
  });

  it('enrolls a pod: listeners in its netns and a certificate from istiod for its identity', async () => {
    await add(WEB, web);
    for (const port of [15001, 15006, 15008]) assert.equal(await web.listening(port), true, `port ${port}`);
    const cert = await eventually('certificate from istiod', async () =>
      (await dump()).certificates.find((c) => c.identity === WEB_ID && c.state === 'Available'),
    );
    const leaf = new X509Certificate(Buffer.from(cert.certChain[0]?.pem ?? '', 'base64').toString('utf8'));
    assert.equal(leaf.subjectAltName, `URI:${WEB_ID}`);
    const root = Buffer.from(cert.rootCerts[0]?.pem ?? '', 'base64').toString('utf8');
    assert.equal(root.trim(), readFileSync(tmp.path('root-cert.pem'), 'utf8').trim(), "istiod's root");
    const w = (await dump()).workloads.find((x) => x.uid === 'Kubernetes//Pod/demo/web-1');
    assert.deepEqual(
      { node: w?.node, ips: w?.workloadIps, protocol: w?.protocol },
      { node: 'node-1', ips: [web.ip], protocol: 'HBONE' },
    );
  });

  it('starts a pod istiod has not pushed yet; its traffic is served once the push arrives', async () => {
    await add(LATE, late);
    assert.equal((await dump()).workloadState[LATE.uid]?.state, 'Up');
    assert.equal(await late.listening(15008), true);
    writeAtomically(
      join(manifests, 'late.yaml'),
      podYaml({ ns: 'demo', name: 'late-1', sa: 'late', node: 'node-1', ip: late.ip, uid: LATE.uid }),
    );
    await eventually(
      'the push arrived',
      async () => (await dump()).workloads.some((w) => w.uid === 'Kubernetes//Pod/demo/late-1'),
      10_000,
    );
    assert.equal((await readiness()).status, 200);
  });

  it('tears a pod down at once on Del', async () => {
    await agent.podDeleted(LATE.uid);
    assert.equal(await late.listening(15008), false);
    assert.equal((await dump()).workloadState[LATE.uid], undefined);
  });
});
