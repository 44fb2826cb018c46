/**
 * `ambientctl zc` against a real `/config_dump`: ztunnel's own code runs in this process (local
 * config mode, certificates from an in-process CA, one pod enrolled over ZDS so it has a
 * certificate and a proxy), the dump is fetched from its admin server, and every view is rendered
 * from it. The expected tables follow istioctl's writers (istio/istio
 * istioctl/pkg/writer/ztunnel/configdump): columns, sort order, and Go tabwriter alignment.
 * Needs root (the pod's network namespace).
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
import { ZdsServer } from '@ambient/common/zds';
import { closeFd } from '@ambient/native';
import { parse as parseYaml } from 'yaml';
import { Ztunnel } from '../../ztunnel/src/app.ts';
import { loadConfig } from '../../ztunnel/src/config.ts';
import {
  CapturedLogs,
  eventually,
  http,
  isRoot,
  PodNetns,
  sweepLeftoverNetns,
  tempDir,
} from '../../ztunnel/test/app-fixtures.ts';
import { parseConfigDump, renderZc } from '../src/zc/index.ts';
import { formatTable } from '../src/zc/tabwriter.ts';

const NODE = 'node-a';

function workload(o: {
  name: string;
  ns: string;
  ip: string;
  node: string;
  protocol?: 'HBONE' | 'NONE';
  status?: 'UNHEALTHY';
  waypoint?: string;
  services?: string[];
  policies?: string[];
}): string {
  return `  - uid: Kubernetes//Pod/${o.ns}/${o.name}
    name: ${o.name}
    namespace: ${o.ns}
    serviceAccount: ${o.name.replace(/-\d+$/, '')}
    addresses: ["${o.ip}"]
    node: ${o.node}
    tunnelProtocol: ${o.protocol ?? 'HBONE'}
    canonicalName: ${o.name.replace(/-\d+$/, '')}
    workloadName: ${o.name.replace(/-\d+$/, '')}
${o.status ? `    status: ${o.status}\n` : ''}${o.waypoint ? `    waypoint: { address: { network: "", address: "${o.waypoint}" }, hboneMtlsPort: 15008 }\n` : ''}${
  o.services
    ? `    services:\n${o.services.map((s) => `      ${s}:\n        ports: [{ servicePort: 80, targetPort: 8080 }]\n`).join('')}`
    : ''
}${o.policies ? `    authorizationPolicies: [${o.policies.join(', ')}]\n` : ''}`;
}

const LOCAL_CONFIG = `workloads:
${[
  workload({
    name: 'web-1',
    ns: 'demo',
    ip: '10.77.1.10',
    node: NODE,
    services: ['demo/web.demo.svc.cluster.local'],
    policies: ['demo/allow-db'],
  }),
  workload({
    name: 'web-2',
    ns: 'demo',
    ip: '10.77.1.11',
    node: 'node-b',
    status: 'UNHEALTHY',
    services: ['demo/web.demo.svc.cluster.local'],
  }),
  workload({ name: 'api-1', ns: 'demo', ip: '10.77.1.12', node: NODE, waypoint: '10.96.1.20' }),
  workload({ name: 'lost-1', ns: 'demo', ip: '10.77.1.14', node: 'node-b', waypoint: '10.96.9.9' }),
  workload({ name: 'db-1', ns: 'data', ip: '10.77.1.13', node: 'node-b', protocol: 'NONE' }),
].join('')}
services:
  - name: web
    namespace: demo
    hostname: web.demo.svc.cluster.local
    addresses: [{ network: "", address: "10.96.1.10" }]
    ports: [{ servicePort: 80, targetPort: 8080 }]
  - name: waypoint
    namespace: demo
    hostname: waypoint.demo.svc.cluster.local
    addresses: [{ network: "", address: "10.96.1.20" }]
    ports: [{ servicePort: 15008, targetPort: 15008 }]
  - name: db
    namespace: data
    hostname: db.data.svc.cluster.local
    addresses: [{ network: "", address: "10.96.1.30" }]
    ports: [{ servicePort: 5432, targetPort: 5432 }]
    waypoint: { address: { network: "", address: "10.96.1.20" }, hboneMtlsPort: 15008 }
policies:
  - name: allow-db
    namespace: demo
    scope: WORKLOAD_SELECTOR
    action: ALLOW
    rules:
      - clauses:
          - matches:
              - principals: [{ exact: cluster.local/ns/demo/sa/db }]
  - name: deny-all
    namespace: demo
    scope: NAMESPACE
    action: DENY
  - name: audit
    namespace: data
    scope: GLOBAL
    action: ALLOW
`;

/** Issues certificates from an in-process CA, checked exactly as a CA response is. */
class TestCaFetcher implements CertificateFetcher {
  readonly #ca: TestCa;
  constructor(ca: TestCa) {
    this.#ca = ca;
  }
  async fetchCertificate(identity: Identity): Promise<WorkloadCertificate> {
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

/**
 * Splits an aligned table into cells by the header's column starts, and checks the alignment as
 * tabwriter makes it: every cell starts exactly at its column's start, with at least `padding`
 * spaces before the next.
 */
function cells(table: string, headers: readonly string[], padding = 1): string[][] {
  const lines = table.replace(/\n$/, '').split('\n');
  const header = lines[0] ?? '';
  const starts: number[] = [];
  let from = 0;
  for (const h of headers) {
    const at = header.indexOf(h, from);
    assert.ok(at >= 0, `header ${h} in ${JSON.stringify(header)}`);
    starts.push(at);
    from = at + h.length;
  }
  assert.equal(starts[0], 0);
  return lines.map((line) =>
    starts.map((s, i) => {
      const end = starts[i + 1];
      const cell = line.slice(s, end).trimEnd();
      if (end !== undefined) {
        assert.ok(
          line.slice(end - padding, end).trim() === '',
          `padding before column ${headers[i + 1]} in ${JSON.stringify(line)}`,
        );
        assert.notEqual(
          line[s],
          ' ',
          `cell of ${headers[i]} starts at its column in ${JSON.stringify(line)}`,
        );
      }
      return cell;
    }),
  );
}

describe('zc renders a real ztunnel /config_dump as istioctl ztunnel-config', {
  skip: !isRoot && 'needs root (a pod network namespace enrolled over ZDS)',
}, () => {
  const tmp = tempDir('zc');
  const logs = new CapturedLogs('warn');
  let ztunnel: Ztunnel;
  let agent: ZdsServer;
  let pod: PodNetns;
  let dumpText: string;

  before(async () => {
    sweepLeftoverNetns();
    pod = new PodNetns('10.77.1.10');
    writeFileSync(tmp.path('local.yaml'), LOCAL_CONFIG);
    const sock = tmp.path('ztunnel.sock');
    ztunnel = Ztunnel.create(
      loadConfig({
        LOCAL_XDS_PATH: tmp.path('local.yaml'),
        CA_ADDRESS: '',
        NODE_NAME: NODE,
        INPOD_UDS: sock,
        ADMIN_PORT: '0',
        STATS_BIND_ADDRESS: '127.0.0.1',
        STATS_PORT: '0',
        READINESS_BIND_ADDRESS: '127.0.0.1',
        READINESS_PORT: '0',
        CONNECTION_TERMINATION_DEADLINE: '1s',
      }),
      { logging: logs.logging, certificateFetcher: new TestCaFetcher(await TestCa.create()) },
    );
    await ztunnel.start();
    agent = new ZdsServer({ path: sock, snapshot: () => [], log: logs.logging.logger('agent') });
    agent.start();
    await eventually('ztunnel connected to the node agent', () => agent.connectionCount === 1);
    const fd = pod.fd();
    try {
      await agent.podAdded('web-1-uid', { name: 'web-1', namespace: 'demo', serviceAccount: 'web' }, fd);
    } finally {
      closeFd(fd);
    }
    dumpText = await eventually('the enrolled pod has its certificate', async () => {
      const r = await http(ztunnel.ports().admin, '/config_dump');
      const d = JSON.parse(r.text) as { certificates: { identity: string; state: string }[] };
      return d.certificates.some((c) => c.identity.endsWith('/sa/web') && c.state === 'Available')
        ? r.text
        : undefined;
    });
  });

  after(async () => {
    await ztunnel?.stop({ mode: 'immediate' });
    await agent?.stop();
    pod?.delete();
    tmp.remove();
  });

  it('workloads: NAMESPACE POD NAME ADDRESS NODE WAYPOINT PROTOCOL, sorted by namespace.name then node', () => {
    const t = renderZc('workloads', dumpText);
    const rows = cells(t, ['NAMESPACE', 'POD NAME', 'ADDRESS', 'NODE', 'WAYPOINT', 'PROTOCOL']);
    assert.deepEqual(rows, [
      ['NAMESPACE', 'POD NAME', 'ADDRESS', 'NODE', 'WAYPOINT', 'PROTOCOL'],
      ['data', 'db-1', '10.77.1.13', 'node-b', 'None', 'TCP'],
      // The waypoint's address is the VIP of Service demo/waypoint: shown by that Service's name.
      ['demo', 'api-1', '10.77.1.12', NODE, 'waypoint', 'HBONE'],
      // A waypoint address no Service has: istioctl prints NA.
      ['demo', 'lost-1', '10.77.1.14', 'node-b', 'NA', 'HBONE'],
      ['demo', 'web-1', '10.77.1.10', NODE, 'None', 'HBONE'],
      ['demo', 'web-2', '10.77.1.11', 'node-b', 'None', 'HBONE'],
    ]);
    // Go's tabwriter: each column as wide as its widest cell plus one space; the last one unpadded.
    assert.equal(t.split('\n')[1], 'data      db-1     10.77.1.13 node-b None     TCP');
  });

  it('workloads filters: namespace, node, address (case-insensitive, as istioctl)', () => {
    const names = (filter: Parameters<typeof renderZc>[2]) =>
      renderZc('workloads', dumpText, filter)
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => l.split(/\s+/)[1]);
    assert.deepEqual(names({ filter: { namespace: 'DATA' } }), ['db-1']);
    assert.deepEqual(names({ filter: { node: 'node-b' } }), ['db-1', 'lost-1', 'web-2']);
    assert.deepEqual(names({ filter: { address: '10.77.1.12' } }), ['api-1']);
    assert.deepEqual(names({ filter: { namespace: 'demo', node: NODE } }), ['api-1', 'web-1']);
  });

  it('services: NAMESPACE SERVICE NAME SERVICE VIP WAYPOINT ENDPOINTS (healthy/all)', () => {
    const rows = cells(renderZc('services', dumpText), [
      'NAMESPACE',
      'SERVICE NAME',
      'SERVICE VIP',
      'WAYPOINT',
      'ENDPOINTS',
    ]);
    assert.deepEqual(rows, [
      ['NAMESPACE', 'SERVICE NAME', 'SERVICE VIP', 'WAYPOINT', 'ENDPOINTS'],
      ['data', 'db', '10.96.1.30', 'waypoint', '0/0'],
      ['demo', 'waypoint', '10.96.1.20', 'None', '0/0'],
      // web-2 is Unhealthy: one of the two endpoints counts.
      ['demo', 'web', '10.96.1.10', 'None', '1/2'],
    ]);
  });

  it('policies: NAMESPACE POLICY NAME ACTION SCOPE with ztunnel spelling', () => {
    const rows = cells(renderZc('policies', dumpText), ['NAMESPACE', 'POLICY NAME', 'ACTION', 'SCOPE']);
    assert.deepEqual(rows, [
      ['NAMESPACE', 'POLICY NAME', 'ACTION', 'SCOPE'],
      ['data', 'audit', 'Allow', 'Global'],
      ['demo', 'allow-db', 'Allow', 'WorkloadSelector'],
      ['demo', 'deny-all', 'Deny', 'Namespace'],
    ]);
    assert.deepEqual(
      cells(renderZc('policies', dumpText, { filter: { namespace: 'data' } }), [
        'NAMESPACE',
        'POLICY NAME',
        'ACTION',
        'SCOPE',
      ]).length,
      2,
    );
  });

  it('certificates: one row per certificate of the chain and roots, serial in hex, validity from the dates', () => {
    const headers = [
      'CERTIFICATE NAME',
      'TYPE',
      'STATUS',
      'VALID CERT',
      'SERIAL NUMBER',
      'NOT AFTER',
      'NOT BEFORE',
    ];
    const t = renderZc('certificates', dumpText);
    const rows = cells(t, headers, 5);
    const dump = JSON.parse(dumpText) as {
      certificates: {
        identity: string;
        certChain: { serialNumber: string; expirationTime: string; validFrom: string }[];
      }[];
    };
    const web =
      dump.certificates.find((c) => c.identity === 'spiffe://cluster.local/ns/demo/sa/web') ??
      assert.fail('the dump has the web certificate');
    const leaf = web.certChain[0] ?? assert.fail('with a chain');
    const leafRow = rows.find((r) => r[0] === web.identity && r[1] === 'Leaf') ?? assert.fail(t);
    assert.deepEqual(leafRow, [
      'spiffe://cluster.local/ns/demo/sa/web',
      'Leaf',
      'Available',
      'true',
      BigInt(leaf.serialNumber).toString(16),
      leaf.expirationTime,
      leaf.validFrom,
    ]);
    assert.ok(
      rows.some((r) => r[0] === web.identity && r[1] === 'Root' && r[3] === 'true'),
      `the trust root is listed: ${t}`,
    );
  });

  it('connections: WORKLOAD DIRECTION LOCAL REMOTE REMOTE TARGET PROTOCOL (no open connection here)', () => {
    assert.equal(
      renderZc('connections', dumpText),
      'WORKLOAD DIRECTION LOCAL REMOTE REMOTE TARGET PROTOCOL\n',
    );
    // The in-pod proxy is in the connections view's JSON, as istioctl prints workloadState.
    const json = JSON.parse(renderZc('connections', dumpText, { output: 'json' })) as {
      state: string;
      info: { name: string };
    }[];
    assert.deepEqual(
      json.map((w) => [w.info.name, w.state]),
      [['web-1', 'Up']],
    );
  });

  it('-o json and -o yaml print the selected entries of the dump as they are', () => {
    const dump = JSON.parse(dumpText) as { workloads: { namespace: string }[]; policies: unknown[] };
    const json = renderZc('workloads', dumpText, { output: 'json', filter: { namespace: 'data' } });
    assert.deepEqual(
      JSON.parse(json),
      dump.workloads.filter((w) => w.namespace === 'data'),
    );
    assert.match(json, /^\[\n {4}\{/, 'indented by four spaces, as json.MarshalIndent in istioctl');
    assert.deepEqual(parseYaml(renderZc('policies', dumpText, { output: 'yaml' })), [
      ...(dump.policies as { namespace: string; name: string }[]).sort((a, b) =>
        `${a.namespace}/${a.name}` < `${b.namespace}/${b.name}` ? -1 : 1,
      ),
    ]);
    assert.deepEqual(JSON.parse(renderZc('all', dumpText, { output: 'json' })), dump);
  });

  it('all: every summary table, each after an empty line', () => {
    const t = renderZc('all', dumpText);
    assert.match(t, /^\nNAMESPACE +POD NAME/);
    assert.match(t, /\n\nNAMESPACE +SERVICE NAME/);
    assert.match(t, /\n\nNAMESPACE +POLICY NAME/);
    assert.match(t, /\n\nCERTIFICATE NAME/);
  });

  it('parses what it reads leniently but refuses something that is not a config dump', () => {
    assert.equal(parseConfigDump(dumpText).workloads.length, 5);
    assert.throws(() => renderZc('workloads', '{"hello":1}'), { code: 'CONFIG_DUMP_INVALID' });
    assert.throws(() => renderZc('workloads', 'not json'), { code: 'CONFIG_DUMP_INVALID' });
  });
});

describe('formatTable aligns as Go text/tabwriter does for istioctl', () => {
  it("reproduces istioctl's own expected policy summary (testdata/policies.txt)", () => {
    assert.equal(
      formatTable([
        ['NAMESPACE', 'POLICY NAME', 'ACTION', 'SCOPE'],
        ['default', 'allow-nothing', 'Allow', 'Namespace'],
        ['default', 'allow-waypoint', 'Allow', 'WorkloadSelector'],
      ]),
      'NAMESPACE POLICY NAME    ACTION SCOPE\ndefault   allow-nothing  Allow  Namespace\ndefault   allow-waypoint Allow  WorkloadSelector\n',
    );
  });

  it('pads empty cells and counts runes, not bytes', () => {
    assert.equal(
      formatTable(
        [
          ['A', 'B', 'C'],
          ['', 'é', 'x'],
        ],
        2,
      ),
      'A  B  C\n   é  x\n',
    );
  });
});
