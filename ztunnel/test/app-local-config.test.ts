/**
 * The local-config document (LOCAL_XDS_PATH / LOCAL_XDS): proto JSON with textual IPs, errors that
 * name the entry, a first load that must be clean, and reloads that remove what disappeared and
 * keep the last good state on a bad edit.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { Logging } from '@ambient/common/log';
import { ProxyState, ProxyStateUpdater } from '@ambient/common/model';
import { ZtunnelError } from '../src/errors.ts';
import { LocalConfigLoader, parseLocalConfig } from '../src/local-config.ts';
import { tempDir } from './app-fixtures.ts';

const log = new Logging({ levels: 'off' }).logger('xds');

const DOC = `workloads:
  - uid: c//Pod/ns/a
    name: a
    namespace: ns
    serviceAccount: sa-a
    addresses: ["10.1.0.1", "fd00::1"]
    tunnelProtocol: HBONE
    networkGateway: { address: { network: net1, address: "192.168.0.1" }, hboneMtlsPort: 15008 }
services:
  - name: svc
    namespace: ns
    hostname: svc.ns.svc.cluster.local
    addresses: [{ network: "", address: "10.96.0.1" }]
    ports: [{ servicePort: 80, targetPort: 8080 }]
policies:
  - name: deny-range
    namespace: ns
    scope: NAMESPACE
    action: DENY
    rules: [{ clauses: [{ matches: [{ sourceIps: [{ address: "10.2.0.0", length: 16 }] }] }] }]
`;

function loader(
  state: ProxyState,
  source: { kind: 'inline'; text: string } | { kind: 'file'; path: string },
) {
  return new LocalConfigLoader({ source, updater: new ProxyStateUpdater(state, { log }), log });
}

describe('local config', () => {
  const tmp = tempDir('localcfg');
  after(() => tmp.remove());

  it('applies workloads, services and policies written as proto JSON with textual IPs', async () => {
    const state = new ProxyState();
    await loader(state, { kind: 'inline', text: DOC }).start();
    const w = state.findWorkloadByUid('c//Pod/ns/a');
    assert.deepEqual(w?.workloadIps, ['10.1.0.1', 'fd00::1']);
    assert.equal(w?.protocol, 'HBONE');
    assert.equal(state.findWorkloadByAddress('', 'fd00:0::1')?.uid, 'c//Pod/ns/a');
    assert.deepEqual(state.toJSON().workloads[0]?.networkGateway, {
      destination: 'net1/192.168.0.1',
      hboneMtlsPort: 15008,
    });
    assert.equal(state.findServiceByVip('', '10.96.0.1')?.hostname, 'svc.ns.svc.cluster.local');
    const policy = state.findPolicy('ns/deny-range');
    assert.equal(policy?.action, 'Deny');
    assert.deepEqual(state.toJSON().policies[0]?.rules, [[[{ sourceIps: ['10.2.0.0/16'] }]]]);
  });

  it('names the entry that is wrong', () => {
    const cases: [string, RegExp][] = [
      ['workloads: [', /LOCAL_XDS is not YAML or JSON/],
      ['- 1', /must hold workloads, services and policies/],
      ['workload: []', /unknown top-level keys workload/],
      ['workloads: {}', /workloads must be a list/],
      ['workloads: [{ uid: x, tunnelProtocol: WARP }]', /workloads\[0\]: .*WARP/],
      ['services: [{}, { name: s, portz: [] }]', /services\[1\]: .*portz/],
      ['policies: [{ action: MAYBE }]', /policies\[0\]: .*MAYBE/],
    ];
    for (const [text, re] of cases) {
      assert.throws(
        () => parseLocalConfig(text, 'LOCAL_XDS'),
        (err: unknown) =>
          err instanceof ZtunnelError && err.code === 'LOCAL_CONFIG_INVALID' && re.test(err.message),
        text,
      );
    }
  });

  it('fails the start when a resource is rejected by the model', async () => {
    const state = new ProxyState();
    const bad = 'workloads: [{ uid: c//Pod/ns/a, name: a, namespace: ns, addresses: ["CgAB"] }]';
    await assert.rejects(loader(state, { kind: 'inline', text: bad }).start(), (err: unknown) => {
      assert.ok(err instanceof ZtunnelError && err.code === 'LOCAL_CONFIG_INVALID');
      assert.match(err.message, /c\/\/Pod\/ns\/a: /);
      return true;
    });
  });

  it('removes what a reload no longer lists and keeps the last good state on a bad edit', async () => {
    const path = tmp.path('local.yaml');
    writeFileSync(path, DOC);
    const state = new ProxyState();
    const l = loader(state, { kind: 'file', path });
    await l.start();
    try {
      writeFileSync(path, 'workloads: []\n');
      await l.reload();
      assert.equal(state.findWorkloadByUid('c//Pod/ns/a'), undefined);
      assert.equal(state.services.size, 0);
      assert.equal(state.findPolicy('ns/deny-range'), undefined);
      writeFileSync(path, DOC);
      await l.reload();
      writeFileSync(path, 'workloads: [');
      await l.reload();
      assert.ok(state.findWorkloadByUid('c//Pod/ns/a'), 'a bad edit keeps the previous state');
    } finally {
      await l.stop();
    }
  });
});
