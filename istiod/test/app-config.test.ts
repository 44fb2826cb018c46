import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { describe, it } from 'node:test';
import { ConfigError } from '@ambient/common/env';
import { ENV, loadConfig, renderEnvTable } from '../src/config.ts';

/** The problems loadConfig reports for `env`, as `NAME=value: reason` lines. */
function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'CONFIG_INVALID');
    return err.problems.map((p) => `${p.envVar}=${p.value}: ${p.reason}`);
  }
  assert.fail(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  it('defaults to local mode on the upstream ports', () => {
    const c = loadConfig({});
    assert.equal(c.configSource, 'local');
    assert.deepEqual(c.local, {
      dataDir: '/var/lib/istiod',
      manifestsDir: '/var/lib/istiod/manifests',
      manifestsDebounceMs: 100,
      manifestsRescanIntervalMs: 10_000,
      caRootDir: '/var/lib/istiod/ca',
      rootCertFile: '/var/lib/istiod/root-cert.pem',
      tokenFile: undefined,
    });
    assert.equal(c.kubeconfigPath, undefined);
    assert.equal(c.podNamespace, 'istio-system');
    assert.equal(c.podName, hostname());
    assert.deepEqual(
      { ...c.mesh },
      {
        clusterId: 'Kubernetes',
        network: '',
        trustDomain: 'cluster.local',
        rootNamespace: 'istio-system',
        domainSuffix: 'cluster.local',
        dryRunPolicies: false,
      },
    );
    assert.deepEqual(c.xds, {
      bindAddress: '0.0.0.0',
      port: 15012,
      plaintextPort: undefined,
      identityCheck: true,
      debounce: { quietMs: 10, maxDelayMs: 1000 },
    });
    assert.deepEqual(c.monitoring, { bindAddress: '0.0.0.0', port: 15014 });
    assert.deepEqual(c.debug, { bindAddress: '0.0.0.0', port: 8080, endpoints: true });
    assert.deepEqual(c.log, { levels: 'info', format: 'json' });
    assert.equal(c.drainDeadlineMs, 10_000);
    assert.deepEqual(c.ca.trustedNodeAccounts, [{ namespace: 'istio-system', serviceAccount: 'ztunnel' }]);
    assert.equal(c.ca.defaultTtlSeconds, 86_400);
    assert.equal(c.ca.pluggedCertsDir, '/etc/cacerts');
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.xds.debounce), 'the config is frozen');
  });

  it('reads every variable it documents', () => {
    const env = {
      CONFIG_SOURCE: 'kubernetes',
      LOCAL_DATA_DIR: '/data',
      LOCAL_MANIFESTS_DIR: '/m',
      LOCAL_MANIFESTS_DEBOUNCE: '5ms',
      LOCAL_MANIFESTS_RESCAN_INTERVAL: '1h',
      CA_ROOT_DIR: '/root-ca',
      ROOT_CERT_FILE: '/pub/root.pem',
      LOCAL_TOKEN_FILE: '/tokens.yaml',
      KUBECONFIG: '/kube/config',
      POD_NAMESPACE: 'mesh-system',
      POD_NAME: 'istiod-0',
      CLUSTER_ID: 'east',
      TRUST_DOMAIN: 'example.org',
      DOMAIN_SUFFIX: 'corp.local',
      NETWORK: 'net1',
      ROOT_NAMESPACE: 'mesh-policies',
      AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY: 'true',
      XDS_BIND_ADDRESS: '127.0.0.1',
      XDS_PORT: '0',
      XDS_PLAINTEXT_PORT: '15010',
      PILOT_ENABLE_XDS_IDENTITY_CHECK: 'false',
      PILOT_DEBOUNCE_AFTER: '10ms',
      PILOT_DEBOUNCE_MAX: '2s',
      MONITORING_BIND_ADDRESS: '::1',
      MONITORING_PORT: '9000',
      DEBUG_BIND_ADDRESS: '127.0.0.2',
      DEBUG_PORT: '9001',
      ENABLE_DEBUG_ON_HTTP: 'off',
      TERMINATION_DRAIN_DURATION: '1m',
      LOG_LEVEL: 'warn,xds:debug',
      LOG_FORMAT: 'plain',
      CA_TRUSTED_NODE_ACCOUNTS: 'mesh-system/ztunnel,kube-system/node-agent',
      DEFAULT_WORKLOAD_CERT_TTL: '1h',
      MAX_WORKLOAD_CERT_TTL: '48h',
      TOKEN_AUDIENCES: 'istio-ca,mesh',
      ROOT_CA_DIR: '/cacerts',
    };
    assert.deepEqual(Object.keys(env).sort(), Object.keys(ENV).sort(), 'this test sets every ENV variable');
    const c = loadConfig(env);
    assert.equal(c.configSource, 'kubernetes');
    assert.deepEqual(c.local, {
      dataDir: '/data',
      manifestsDir: '/m',
      manifestsDebounceMs: 5,
      manifestsRescanIntervalMs: 3_600_000,
      caRootDir: '/root-ca',
      rootCertFile: '/pub/root.pem',
      tokenFile: '/tokens.yaml',
    });
    assert.equal(c.kubeconfigPath, '/kube/config');
    assert.equal(c.podNamespace, 'mesh-system');
    assert.equal(c.podName, 'istiod-0');
    assert.deepEqual(
      { ...c.mesh },
      {
        clusterId: 'east',
        network: 'net1',
        trustDomain: 'example.org',
        rootNamespace: 'mesh-policies',
        domainSuffix: 'corp.local',
        dryRunPolicies: true,
      },
    );
    assert.deepEqual(c.xds, {
      bindAddress: '127.0.0.1',
      port: 0,
      plaintextPort: 15010,
      identityCheck: false,
      debounce: { quietMs: 10, maxDelayMs: 2000 },
    });
    assert.deepEqual(c.monitoring, { bindAddress: '::1', port: 9000 });
    assert.deepEqual(c.debug, { bindAddress: '127.0.0.2', port: 9001, endpoints: false });
    assert.deepEqual(c.log, { levels: 'warn,xds:debug', format: 'text' });
    assert.equal(c.drainDeadlineMs, 60_000);
    assert.deepEqual(c.ca, {
      trustedNodeAccounts: [
        { namespace: 'mesh-system', serviceAccount: 'ztunnel' },
        { namespace: 'kube-system', serviceAccount: 'node-agent' },
      ],
      defaultTtlSeconds: 3600,
      maxTtlSeconds: 172_800,
      tokenAudiences: ['istio-ca', 'mesh'],
      pluggedCertsDir: '/cacerts',
    });
  });

  it('roots the local paths under LOCAL_DATA_DIR and the root namespace at POD_NAMESPACE', () => {
    const c = loadConfig({ LOCAL_DATA_DIR: '/srv/istiod', POD_NAMESPACE: 'mesh', ROOT_NAMESPACE: 'policy' });
    assert.equal(c.local.manifestsDir, '/srv/istiod/manifests');
    assert.equal(c.local.caRootDir, '/srv/istiod/ca');
    assert.equal(c.local.rootCertFile, '/srv/istiod/root-cert.pem');
    assert.equal(c.mesh.rootNamespace, 'policy');
    assert.equal(loadConfig({ POD_NAMESPACE: 'mesh' }).mesh.rootNamespace, 'mesh');
  });

  it('treats empty values as unset, as Kubernetes renders them', () => {
    const c = loadConfig({ XDS_PORT: '', CONFIG_SOURCE: '', LOG_LEVEL: '' });
    assert.equal(c.xds.port, 15012);
    assert.equal(c.configSource, 'local');
    assert.equal(c.log.levels, 'info');
  });

  const cases: [string, Record<string, string>, string][] = [
    [
      'an unknown config source',
      { CONFIG_SOURCE: 'etcd' },
      'CONFIG_SOURCE=etcd: must be one of local, kubernetes',
    ],
    [
      'a port that is not a number',
      { XDS_PORT: '15o12' },
      'XDS_PORT=15o12: is not a TCP port (an integer from 0 to 65535)',
    ],
    [
      'a port out of range',
      { MONITORING_PORT: '70000' },
      'MONITORING_PORT=70000: is not a TCP port (an integer from 0 to 65535)',
    ],
    [
      'a plaintext port out of range',
      { XDS_PLAINTEXT_PORT: '-1' },
      'XDS_PLAINTEXT_PORT=-1: is not a TCP port (an integer from 0 to 65535)',
    ],
    [
      'a debug port that is not a port',
      { DEBUG_PORT: 'http' },
      'DEBUG_PORT=http: is not a TCP port (an integer from 0 to 65535)',
    ],
    [
      'two listeners on one port',
      { DEBUG_PORT: '15014' },
      'DEBUG_PORT=15014: is the same port as MONITORING_PORT',
    ],
    [
      'the plaintext port equal to the TLS port',
      { XDS_PLAINTEXT_PORT: '15012' },
      'XDS_PLAINTEXT_PORT=15012: is the same port as XDS_PORT',
    ],
    [
      'a bind address that is not an IP',
      { XDS_BIND_ADDRESS: 'localhost' },
      'XDS_BIND_ADDRESS=localhost: is not an IP address',
    ],
    [
      'a monitoring bind address that is not an IP',
      { MONITORING_BIND_ADDRESS: '1.2.3' },
      'MONITORING_BIND_ADDRESS=1.2.3: is not an IP address',
    ],
    [
      'a debug bind address that is not an IP',
      { DEBUG_BIND_ADDRESS: '*' },
      'DEBUG_BIND_ADDRESS=*: is not an IP address',
    ],
    [
      'a debounce without a unit',
      { PILOT_DEBOUNCE_AFTER: '100' },
      'PILOT_DEBOUNCE_AFTER=100: is not a duration (a number followed by ms, s, m or h, e.g. 10s)',
    ],
    [
      'a max debounce shorter than the quiet period',
      { PILOT_DEBOUNCE_AFTER: '2s', PILOT_DEBOUNCE_MAX: '1s' },
      'PILOT_DEBOUNCE_MAX=1s: must not be shorter than PILOT_DEBOUNCE_AFTER (2000ms)',
    ],
    ['a max debounce of zero', { PILOT_DEBOUNCE_MAX: '0ms' }, 'PILOT_DEBOUNCE_MAX=0ms: must be at least 1ms'],
    [
      'a manifests debounce over a minute',
      { LOCAL_MANIFESTS_DEBOUNCE: '2m' },
      'LOCAL_MANIFESTS_DEBOUNCE=2m: must be at most 60000ms',
    ],
    [
      'a rescan interval under 100ms',
      { LOCAL_MANIFESTS_RESCAN_INTERVAL: '10ms' },
      'LOCAL_MANIFESTS_RESCAN_INTERVAL=10ms: must be at least 100ms',
    ],
    [
      'a drain duration that is not a duration',
      { TERMINATION_DRAIN_DURATION: 'soon' },
      'TERMINATION_DRAIN_DURATION=soon: is not a duration (a number followed by ms, s, m or h, e.g. 10s)',
    ],
    [
      'an identity check that is not a boolean',
      { PILOT_ENABLE_XDS_IDENTITY_CHECK: 'maybe' },
      'PILOT_ENABLE_XDS_IDENTITY_CHECK=maybe: is not a boolean (use true or false)',
    ],
    [
      'debug endpoints that are not a boolean',
      { ENABLE_DEBUG_ON_HTTP: 'y' },
      'ENABLE_DEBUG_ON_HTTP=y: is not a boolean (use true or false)',
    ],
    [
      'a dry-run flag that is not a boolean',
      { AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY: '2' },
      'AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY=2: is not a boolean (use true or false)',
    ],
    [
      'a namespace that is not a name',
      { POD_NAMESPACE: 'Istio_System' },
      'POD_NAMESPACE=Istio_System: is not a Kubernetes namespace name (lower-case letters, digits and "-")',
    ],
    [
      'a root namespace that is not a name',
      { ROOT_NAMESPACE: '-x' },
      'ROOT_NAMESPACE=-x: is not a Kubernetes namespace name (lower-case letters, digits and "-")',
    ],
    [
      'a trust domain with a slash',
      { TRUST_DOMAIN: 'cluster.local/ns' },
      'TRUST_DOMAIN=cluster.local/ns: is not a trust domain (letters, digits, "-" and ".")',
    ],
    [
      'a domain suffix with a leading dot',
      { DOMAIN_SUFFIX: '.cluster.local' },
      'DOMAIN_SUFFIX=.cluster.local: is not a DNS suffix',
    ],
    [
      'an unknown log level',
      { LOG_LEVEL: 'info,xds:chatty' },
      'LOG_LEVEL=info,xds:chatty: log level "chatty" for scope "xds" is not one of trace, debug, info, warn, error, fatal, off',
    ],
    ['an unknown log format', { LOG_FORMAT: 'xml' }, 'LOG_FORMAT=xml: must be one of json, text, plain'],
    [
      'a malformed trusted node account',
      { CA_TRUSTED_NODE_ACCOUNTS: 'ztunnel' },
      'CA_TRUSTED_NODE_ACCOUNTS=ztunnel: trusted node account "ztunnel" is not <namespace>/<serviceaccount>',
    ],
    [
      'a default certificate lifetime over the maximum',
      { DEFAULT_WORKLOAD_CERT_TTL: '48h', MAX_WORKLOAD_CERT_TTL: '24h' },
      'DEFAULT_WORKLOAD_CERT_TTL=48h: must not exceed MAX_WORKLOAD_CERT_TTL (86400s)',
    ],
    [
      'a NUL byte in a path',
      { LOCAL_MANIFESTS_DIR: '/m\0x' },
      'LOCAL_MANIFESTS_DIR=/m\0x: contains a NUL byte',
    ],
  ];
  for (const [what, env, expected] of cases) {
    it(`refuses ${what}, naming the variable, its value and the reason`, () => {
      assert.deepEqual(problems(env), [expected]);
    });
  }

  it('reports every problem at once', () => {
    const found = problems({ XDS_PORT: 'x', LOG_FORMAT: 'xml', CONFIG_SOURCE: 'etcd' });
    assert.deepEqual(
      found.map((p) => p.split('=')[0]),
      ['CONFIG_SOURCE', 'XDS_PORT', 'LOG_FORMAT'],
    );
    try {
      loadConfig({ XDS_PORT: 'x', LOG_FORMAT: 'xml' });
    } catch (err) {
      assert.match(String((err as Error).message), /XDS_PORT="x": is not a TCP port/);
      assert.match(String((err as Error).message), /LOG_FORMAT="xml": must be one of json, text, plain/);
    }
  });
});

describe('ENV', () => {
  it('documents each variable under its own name', () => {
    for (const [key, doc] of Object.entries(ENV)) assert.equal(doc.name, key);
  });

  it('is rendered into the README table as it stands', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    assert.ok(
      readme.includes(renderEnvTable()),
      'istiod/README.md carries the table renderEnvTable() prints (run `istiod --help` and paste it)',
    );
  });
});
