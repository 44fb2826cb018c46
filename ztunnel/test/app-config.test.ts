/**
 * loadConfig: upstream defaults, upstream variable names, and one ConfigError naming every bad
 * variable with its value and the reason.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigError } from '@ambient/common/env';
import { ztunnelNode } from '@ambient/common/xds/client';
import {
  DEFAULT_INPOD_MARK,
  DEFAULT_ROOT_CERT_PATH,
  DEFAULT_TOKEN_PATH,
  ENV,
  loadConfig,
  PORTS,
  redactedConfig,
  renderEnvTable,
} from '../src/config.ts';
import { controlPlaneOptions, tokenSource } from '../src/control-plane.ts';

function problemsOf(env: Record<string, string>): Map<string, string> {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return new Map(err.problems.map((p) => [p.envVar, `${p.value} :: ${p.reason}`]));
  }
  assert.fail('loadConfig accepted a bad environment');
}

describe('ztunnel loadConfig', () => {
  it('defaults to upstream ztunnel values', () => {
    const c = loadConfig({});
    assert.equal(c.proxyMode, 'shared');
    assert.equal(c.xds?.address, 'https://localhost:15012');
    assert.equal(c.ca?.address, 'https://localhost:15012');
    assert.deepEqual(c.xds?.rootCert, { kind: 'file', path: DEFAULT_ROOT_CERT_PATH });
    assert.deepEqual(c.ca?.rootCert, { kind: 'file', path: DEFAULT_ROOT_CERT_PATH });
    assert.equal(c.xds?.onDemand, false);
    assert.deepEqual(c.authToken, { kind: 'file', path: DEFAULT_TOKEN_PATH, optional: true });
    assert.equal(c.clusterId, 'Kubernetes');
    assert.equal(c.clusterDomain, 'cluster.local');
    assert.equal(c.secretTtlMs, 24 * 3600 * 1000);
    assert.equal(c.inpod.udsPath, '/var/run/ztunnel/ztunnel.sock');
    assert.equal(c.inpod.portReuse, true);
    assert.equal(c.packetMark, DEFAULT_INPOD_MARK);
    assert.equal(c.packetMark, 1337);
    assert.equal(c.enableOriginalSource, undefined);
    assert.deepEqual(c.hbone, {
      windowSize: 4 * 1024 * 1024,
      connectionWindowSize: 16 * 1024 * 1024,
      frameSize: 1024 * 1024,
      poolMaxStreamsPerConnection: 100,
      poolUnusedReleaseTimeoutMs: 5 * 60_000,
    });
    assert.equal(c.terminationDeadlineMs, 5000);
    assert.deepEqual(c.admin, { bindAddress: '127.0.0.1', port: PORTS.ADMIN });
    assert.deepEqual(c.stats, { bindAddress: '::', port: 15020 });
    assert.deepEqual(c.readiness, { bindAddress: '::', port: 15021 });
    assert.deepEqual(c.log, { levels: 'info', format: 'text' });
    assert.equal(c.authzPolicyInfoLogging, false);
    assert.equal(c.localXds, undefined);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.hbone), 'the config is frozen');
  });

  it('points at istiod in the cluster when running in Kubernetes', () => {
    const c = loadConfig({ KUBERNETES_SERVICE_HOST: '10.96.0.1' });
    assert.equal(c.xds?.address, 'https://istiod.istio-system.svc:15012');
    assert.equal(c.ca?.address, 'https://istiod.istio-system.svc:15012');
  });

  it('reads the upstream variable names', () => {
    const c = loadConfig({
      XDS_ADDRESS: 'istiod-rev1.istio-system.svc:15012',
      CA_ADDRESS: 'https://ca.example:15443',
      XDS_ROOT_CA: '/etc/roots/xds.pem',
      CA_ROOT_CA: 'SYSTEM',
      ALT_XDS_HOSTNAME: 'istiod.istio-system.svc',
      AUTH_TOKEN: '/var/run/tok',
      ISTIO_META_CLUSTER_ID: 'east',
      CLUSTER_ID: 'ignored-when-meta-set',
      ISTIO_META_DNS_CAPTURE: 'true',
      ISTIO_METAJSON_LABELS: '{"app":"ztunnel"}',
      NODE_NAME: 'node-1',
      POD_NAME: 'ztunnel-abc',
      POD_NAMESPACE: 'istio-system',
      INSTANCE_IP: '10.0.1.2',
      SECRET_TTL: '12h',
      INPOD_UDS: '/tmp/zt.sock',
      PACKET_MARK: '4242',
      INPOD_PORT_REUSE: 'false',
      ENABLE_ORIG_SRC: 'true',
      XDS_ON_DEMAND: 'true',
      HTTP2_STREAM_WINDOW_SIZE: '1048576',
      HTTP2_CONNECTION_WINDOW_SIZE: '8388608',
      HTTP2_FRAME_SIZE: '65536',
      POOL_MAX_STREAMS_PER_CONNECTION: '50',
      POOL_UNUSED_RELEASE_TIMEOUT: '30s',
      CONNECTION_TERMINATION_DEADLINE: '2s',
      LOG_LEVEL: 'info,xds:debug',
      LOG_FORMAT: 'json',
      AUTHZ_POLICY_INFO_LOGGING: 'true',
      XDS_HEADER_X_TENANT: 'blue',
      CA_HEADER_X_CA_HINT: 'one',
      IPV6_ENABLED: 'false',
    });
    assert.equal(c.xds?.address, 'https://istiod-rev1.istio-system.svc:15012', 'https:// added');
    assert.equal(c.ca?.address, 'https://ca.example:15443');
    assert.deepEqual(c.xds?.rootCert, { kind: 'file', path: '/etc/roots/xds.pem' });
    assert.deepEqual(c.ca?.rootCert, { kind: 'system' });
    assert.equal(c.xds?.altHostname, 'istiod.istio-system.svc');
    assert.deepEqual(c.authToken, { kind: 'file', path: '/var/run/tok', optional: false });
    assert.equal(c.clusterId, 'east', 'ISTIO_META_CLUSTER_ID wins over CLUSTER_ID');
    assert.deepEqual(c.proxyMetadata, { CLUSTER_ID: 'east', DNS_CAPTURE: 'true' });
    assert.deepEqual(c.proxyMetadataJson, { LABELS: { app: 'ztunnel' } });
    assert.equal(c.nodeName, 'node-1');
    assert.equal(c.secretTtlMs, 12 * 3600 * 1000);
    assert.equal(c.inpod.udsPath, '/tmp/zt.sock');
    assert.equal(c.inpod.portReuse, false);
    assert.equal(c.packetMark, 4242);
    assert.equal(c.enableOriginalSource, true);
    assert.equal(c.xds?.onDemand, true);
    assert.deepEqual(c.hbone, {
      windowSize: 1048576,
      connectionWindowSize: 8388608,
      frameSize: 65536,
      poolMaxStreamsPerConnection: 50,
      poolUnusedReleaseTimeoutMs: 30_000,
    });
    assert.equal(c.terminationDeadlineMs, 2000);
    assert.deepEqual(c.log, { levels: 'info,xds:debug', format: 'json' });
    assert.equal(c.authzPolicyInfoLogging, true);
    assert.deepEqual(c.xds?.headers, { x_tenant: 'blue' });
    assert.deepEqual(c.ca?.headers, { x_ca_hint: 'one' });
    assert.equal(c.stats.bindAddress, '0.0.0.0', 'no IPv6: the IPv4 wildcard');

    // The node identity built from it (spec §3.2).
    const node = ztunnelNode({
      instanceIp: c.instanceIp ?? '',
      podName: c.podName,
      podNamespace: c.podNamespace,
      nodeName: c.nodeName ?? '',
      clusterId: c.clusterId,
      proxyMetadata: c.proxyMetadata,
    });
    assert.equal(node.id, 'ztunnel~10.0.1.2~ztunnel-abc.istio-system~istio-system.svc.cluster.local');
    assert.equal(node.metadata?.NAMESPACE, 'istio-system');
    assert.equal(node.metadata?.NODE_NAME, 'node-1');
    assert.equal(node.metadata?.CLUSTER_ID, 'east');
    assert.equal(node.metadata?.DNS_CAPTURE, 'true');

    const cp = controlPlaneOptions(c, c.xds ?? assert.fail('xds on'));
    assert.equal(cp.address, 'istiod-rev1.istio-system.svc:15012');
    assert.equal(cp.tls?.serverName, 'istiod.istio-system.svc');
    assert.equal(cp.clusterId, 'east');
  });

  it('derives the drain deadline from the pod grace period as upstream does', () => {
    assert.equal(loadConfig({ TERMINATION_GRACE_PERIOD_SECONDS: '30' }).terminationDeadlineMs, 25_000);
    assert.equal(loadConfig({ TERMINATION_GRACE_PERIOD_SECONDS: '10' }).terminationDeadlineMs, 9_000);
    assert.equal(loadConfig({ TERMINATION_GRACE_PERIOD_SECONDS: '1' }).terminationDeadlineMs, 1_000);
    assert.equal(
      loadConfig({ TERMINATION_GRACE_PERIOD_SECONDS: '30', CONNECTION_TERMINATION_DEADLINE: '3s' })
        .terminationDeadlineMs,
      3_000,
      'an explicit deadline wins',
    );
  });

  it('runs without istiod in local-config mode unless an address is given', () => {
    const local = loadConfig({ LOCAL_XDS_PATH: '/etc/ztunnel/local.yaml', CA_ADDRESS: '' });
    assert.deepEqual(local.localXds, { kind: 'file', path: '/etc/ztunnel/local.yaml' });
    assert.equal(local.xds, undefined, 'no xDS');
    assert.equal(local.ca, undefined, 'CA_ADDRESS="" turns certificates off');
    const both = loadConfig({ LOCAL_XDS: 'workloads: []', XDS_ADDRESS: 'localhost:15012' });
    assert.deepEqual(both.localXds, { kind: 'inline', text: 'workloads: []' });
    assert.equal(both.xds?.address, 'https://localhost:15012');
    assert.equal(loadConfig({ XDS_ADDRESS: '' }).xds, undefined, 'XDS_ADDRESS="" turns xDS off');
    assert.equal(
      loadConfig({ XDS_ADDRESS: 'http://127.0.0.1:15010' }).xds?.address,
      'http://127.0.0.1:15010',
    );
  });

  it('takes ports and metadata from PROXY_CONFIG, with explicit variables winning', () => {
    const c = loadConfig({
      PROXY_CONFIG: JSON.stringify({
        discoveryAddress: 'istiod-canary.istio-system.svc:15012',
        proxyAdminPort: 15999,
        statsPort: 15888,
        proxyMetadata: { ISTIO_META_FOO: 'foo', BAR: 'bar' },
      }),
      ISTIO_META_BAR: 'from-env',
    });
    assert.equal(c.xds?.address, 'https://istiod-canary.istio-system.svc:15012');
    assert.equal(c.admin.port, 15999);
    assert.equal(c.stats.port, 15888);
    assert.deepEqual(c.proxyMetadata, { FOO: 'foo', BAR: 'from-env' });
    assert.equal(loadConfig({ PROXY_CONFIG: 'proxyAdminPort: 15999', ADMIN_PORT: '0' }).admin.port, 0);
  });

  it('requires PROXY_WORKLOAD_INFO in dedicated mode and drops the default mark', () => {
    const c = loadConfig({ PROXY_MODE: 'dedicated', PROXY_WORKLOAD_INFO: 'demo/web-1/web' });
    assert.deepEqual(c.proxyWorkloadInfo, { namespace: 'demo', name: 'web-1', serviceAccount: 'web' });
    assert.equal(c.packetMark, undefined);
    const problems = problemsOf({ PROXY_MODE: 'dedicated' });
    assert.match(problems.get('PROXY_WORKLOAD_INFO') ?? '', /required with PROXY_MODE=dedicated/);
    assert.match(
      problemsOf({ PROXY_MODE: 'dedicated', PROXY_WORKLOAD_INFO: 'demo/web-1' }).get('PROXY_WORKLOAD_INFO') ??
        '',
      /namespace\/name\/service-account/,
    );
  });

  it('keeps a literal AUTH_TOKEN out of logs and dumps', async () => {
    const c = loadConfig({ AUTH_TOKEN: 'eyJhbGciOiJSUzI1NiJ9.payload.sig' });
    assert.deepEqual(c.authToken, { kind: 'static', token: 'eyJhbGciOiJSUzI1NiJ9.payload.sig' });
    assert.equal(await tokenSource(c.authToken)(), 'eyJhbGciOiJSUzI1NiJ9.payload.sig');
    assert.doesNotMatch(JSON.stringify(redactedConfig(c)), /payload/);
    // The default token file is optional: absent means no token, not an error.
    const missing = tokenSource({ kind: 'file', path: '/nonexistent/istio-token', optional: true });
    assert.equal(await missing(), undefined);
    await assert.rejects(
      async () => tokenSource({ kind: 'file', path: '/nonexistent/istio-token', optional: false })(),
      /cannot read token file/,
    );
  });

  it('names every bad variable, its value and the reason in one error', () => {
    const problems = problemsOf({
      PROXY_MODE: 'sidecar',
      XDS_ADDRESS: 'ftp://istiod:15012',
      CA_ADDRESS: 'istiod',
      PACKET_MARK: 'lots',
      SECRET_TTL: 'forever',
      HTTP2_FRAME_SIZE: '1024',
      POOL_MAX_STREAMS_PER_CONNECTION: '0',
      LOG_LEVEL: 'info,xds:loud',
      LOG_FORMAT: 'xml',
      INSTANCE_IP: 'not-an-ip',
      INPOD_PORT_REUSE: 'maybe',
      STATS_PORT: '15021',
      LOCAL_XDS_PATH: '/a.yaml',
      LOCAL_XDS: 'workloads: []',
      PROXY_CONFIG: '[1, 2]',
      XDS_HEADER_BAD: 'caf\u00e9',
    });
    const expect: Record<string, RegExp> = {
      PROXY_MODE: /sidecar :: must be one of shared, dedicated/,
      XDS_ADDRESS: /must use https:\/\//,
      CA_ADDRESS: /must name a host and a port/,
      PACKET_MARK: /lots :: is not an integer/,
      SECRET_TTL: /forever :: is not a duration/,
      HTTP2_FRAME_SIZE: /must be at least 16384/,
      POOL_MAX_STREAMS_PER_CONNECTION: /must be at least 1/,
      LOG_LEVEL: /"loud"/,
      LOG_FORMAT: /must be one of json, text, plain/,
      INSTANCE_IP: /is not an IP address/,
      INPOD_PORT_REUSE: /is not a boolean/,
      READINESS_PORT: /same port as STATS_PORT/,
      LOCAL_XDS: /cannot be set together with LOCAL_XDS_PATH/,
      PROXY_CONFIG: /not a ProxyConfig object/,
      XDS_HEADER_BAD: /printable ASCII/,
    };
    for (const [name, re] of Object.entries(expect)) {
      assert.match(problems.get(name) ?? `(no problem for ${name})`, re, name);
    }
    assert.equal(problems.size, Object.keys(expect).length, [...problems.keys()].join(', '));
  });

  it('documents every variable it reads in the env table, and the README carries that table', () => {
    const table = renderEnvTable();
    for (const v of Object.values(ENV)) assert.ok(table.includes(`\`${v.name}\``), v.name);
    assert.match(table, /\| `XDS_ADDRESS` \|/);
    // The formatter pads the README's table; compare cell contents only.
    const cells = (text: string) => text.replace(/[ \t]*\|[ \t]*/g, '|').replace(/-{3,}/g, '---');
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    assert.ok(
      cells(readme).includes(cells(table)),
      'ztunnel/README.md holds the current renderEnvTable() output',
    );
  });
});
