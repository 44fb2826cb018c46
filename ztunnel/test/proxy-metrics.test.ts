import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import * as wl from '@ambient/common/gen/istio/workload/workload_pb';
import { makeIdentity } from '@ambient/common/identity';
import { Logging } from '@ambient/common/log';
import { workloadFromProto } from '@ambient/common/model';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { Registry } from 'prom-client';
import { logEarlyDeny } from '../src/proxy/access-log.ts';
import { ProxyError } from '../src/proxy/errors.ts';
import { ConnectionResult, ProxyMetrics, trafficLabels } from '../src/proxy/metrics.ts';
import { proxyProtocolHeader } from '../src/proxy/proxy-protocol.ts';

function workload(name: string, ns: string, extra: MessageInitShape<typeof wl.WorkloadSchema> = {}) {
  return workloadFromProto(
    create(wl.WorkloadSchema, {
      uid: `Kubernetes//Pod/${ns}/${name}`,
      name,
      namespace: ns,
      serviceAccount: `sa-${name}`,
      addresses: [Uint8Array.from([10, 0, 0, 1])],
      tunnelProtocol: wl.TunnelProtocol.HBONE,
      ...extra,
    }),
  );
}

function capture(format: 'json' | 'text'): { logging: Logging; lines: string[] } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _e, cb) {
      lines.push(
        ...chunk
          .toString('utf8')
          .split('\n')
          .filter((l) => l !== ''),
      );
      cb();
    },
  });
  return { logging: new Logging({ format, destination }), lines };
}

describe('traffic labels', () => {
  test('unknown by default; WDS source wins over derived names; principal only from the derived source', () => {
    const src = workload('client', 'ns-a', { workloadName: 'client-deploy', canonicalName: 'client-app' });
    const dst = workload('server', 'ns-b', { canonicalName: 'server-app', canonicalRevision: 'v2' });
    const bare = trafficLabels({ reporter: 'destination', mtls: false });
    assert.equal(bare.source_workload, 'unknown');
    assert.equal(bare.connection_security_policy, 'unknown');
    assert.equal(bare.response_flags, '-');
    assert.equal(bare.request_protocol, 'tcp');

    const l = trafficLabels({
      reporter: 'destination',
      source: src,
      derivedSource: { identity: src.identity, workloadName: 'from-baggage', namespace: 'ns-baggage' },
      destination: dst,
      mtls: true,
    });
    assert.equal(l.source_workload, 'client-deploy');
    assert.equal(l.source_workload_namespace, 'ns-a');
    assert.equal(l.source_principal, 'spiffe://cluster.local/ns/ns-a/sa/sa-client');
    assert.equal(l.source_app, 'client-app');
    assert.equal(l.destination_principal, 'spiffe://cluster.local/ns/ns-b/sa/sa-server');
    assert.equal(l.destination_canonical_revision, 'v2');
    assert.equal(l.destination_version, 'v2');
    assert.equal(l.destination_cluster, 'Kubernetes');
    assert.equal(l.connection_security_policy, 'mutual_tls');

    // Without a WDS source the baggage-derived names are used.
    const derived = trafficLabels({
      reporter: 'destination',
      derivedSource: { workloadName: 'from-baggage', namespace: 'ns-baggage' },
      mtls: true,
    });
    assert.equal(derived.source_workload, 'from-baggage');
    assert.equal(derived.source_workload_namespace, 'ns-baggage');
    assert.equal(derived.source_principal, 'unknown');
  });
});

describe('connection result', () => {
  test('counts and logs one "connection complete" line with ztunnel field names (text format)', async () => {
    const registry = new Registry();
    const metrics = new ProxyMetrics(registry);
    const { logging, lines } = capture('text');
    const src = workload('client', 'ns-a');
    const dst = workload('server', 'ns-b');
    const result = new ConnectionResult({
      src: { ip: '10.0.0.1', port: 40000 },
      dst: { ip: '10.0.0.2', port: 15008 },
      hboneTarget: '10.0.0.2:8080',
      open: {
        reporter: 'source',
        source: src,
        derivedSource: { identity: src.identity },
        destination: dst,
        mtls: true,
      },
      metrics,
      accessLog: logging.logger('access'),
    });
    result.downstreamToUpstream(1000);
    result.upstreamToDownstream(20);
    result.record();
    result.record(new Error('ignored: recorded once'));
    await logging.flush();
    assert.equal(lines.length, 1);
    const [, level, scope, msg, ...kv] = (lines[0] as string).split('\t');
    assert.equal(level, 'info');
    assert.equal(scope, 'access');
    assert.equal(msg, 'connection complete');
    const fields = Object.fromEntries(
      kv.map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]),
    );
    assert.equal(fields['src.addr'], '10.0.0.1:40000');
    assert.equal(fields['src.workload'], 'client');
    assert.equal(fields['src.namespace'], 'ns-a');
    assert.equal(fields['src.identity'], 'spiffe://cluster.local/ns/ns-a/sa/sa-client');
    assert.equal(fields['dst.addr'], '10.0.0.2:15008');
    assert.equal(fields['dst.hbone_addr'], '10.0.0.2:8080');
    assert.equal(fields['dst.workload'], 'server');
    assert.equal(fields['dst.namespace'], 'ns-b');
    assert.equal(fields['dst.identity'], 'spiffe://cluster.local/ns/ns-b/sa/sa-server');
    assert.equal(fields.direction, 'outbound');
    // Outbound: the log shows what the client sent as bytes_sent.
    assert.equal(fields.bytes_sent, '1000');
    assert.equal(fields.bytes_recv, '20');
    assert.match(fields.duration ?? '', /^\d+ms$/);
    assert.equal(fields.error, undefined);

    const opened = await metrics.connectionsOpened.get();
    assert.equal(opened.values[0]?.value, 1);
    const received = await metrics.receivedBytes.get();
    assert.equal(received.values[0]?.value, 1000);
    const sent = await metrics.sentBytes.get();
    assert.equal(sent.values[0]?.value, 20);
    const text = await registry.metrics();
    assert.match(text, /^istio_tcp_connections_closed_total\{reporter="source",.*response_flags="-".*\} 1$/m);
  });

  test('a failure is logged at error with error and error_code, counted as failed with its flag (JSON format)', async () => {
    const metrics = new ProxyMetrics(new Registry());
    const { logging, lines } = capture('json');
    const result = new ConnectionResult({
      src: { ip: '10.0.0.1', port: 40000 },
      dst: { ip: '10.0.0.2', port: 8080 },
      open: { reporter: 'destination', destination: workload('server', 'ns-b'), mtls: false },
      metrics,
      accessLog: logging.logger('access'),
    });
    result.record(new ProxyError('POLICY_DENIED', 'connection closed due to policy rejection: x'), 'DENY');
    await logging.flush();
    const line = JSON.parse(lines[0] as string) as Record<string, unknown>;
    assert.equal(line.level, 'error');
    assert.equal(line.msg, 'connection complete');
    assert.equal(line.error, 'connection closed due to policy rejection: x');
    assert.equal(line.error_code, 'POLICY_DENIED');
    assert.equal(line['src.identity'], undefined, 'no identity without mTLS');
    assert.equal(line['dst.identity'], undefined);
    assert.equal(line.direction, 'inbound');
    const failed = await metrics.connectionsFailed.get();
    assert.equal(failed.values[0]?.labels.response_flags, 'DENY');
    assert.equal(failed.values[0]?.value, 1);
  });

  test('an early deny is one WARN "connection failed" line with addresses, direction and error', async () => {
    const { logging, lines } = capture('json');
    logEarlyDeny(
      logging.logger('access'),
      { src: { ip: 'fd00::1', port: 5 }, dst: { ip: '127.0.0.1', port: 15008 }, direction: 'outbound' },
      new ProxyError('SELF_CALL', 'attempted recursive call to ourselves: 127.0.0.1:15008'),
    );
    await logging.flush();
    const line = JSON.parse(lines[0] as string) as Record<string, unknown>;
    assert.equal(line.level, 'warn');
    assert.equal(line.msg, 'connection failed');
    assert.equal(line['src.addr'], '[fd00::1]:5');
    assert.equal(line['dst.addr'], '127.0.0.1:15008');
    assert.equal(line.error_code, 'SELF_CALL');
  });
});

describe('PROXY protocol v2 header', () => {
  test('IPv4 with the peer identity TLV', () => {
    const id = makeIdentity('cluster.local', 'ns', 'sa');
    const h = proxyProtocolHeader({ ip: '10.0.0.1', port: 1234 }, { ip: '10.0.0.2', port: 80 }, id);
    assert.deepEqual(
      [...h.subarray(0, 12)],
      [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a],
    );
    assert.equal(h[12], 0x21);
    assert.equal(h[13], 0x11);
    const spiffe = 'spiffe://cluster.local/ns/ns/sa/sa';
    assert.equal(h.readUInt16BE(14), 12 + 3 + spiffe.length);
    assert.deepEqual([...h.subarray(16, 24)], [10, 0, 0, 1, 10, 0, 0, 2]);
    assert.equal(h.readUInt16BE(24), 1234);
    assert.equal(h.readUInt16BE(26), 80);
    assert.equal(h[28], 0xd0);
    assert.equal(h.readUInt16BE(29), spiffe.length);
    assert.equal(h.subarray(31).toString(), spiffe);
  });

  test('mixed families become IPv6 with the IPv4 side mapped', () => {
    const h = proxyProtocolHeader({ ip: '10.0.0.1', port: 1 }, { ip: 'fd00::2', port: 2 });
    assert.equal(h[13], 0x21);
    assert.equal(h.readUInt16BE(14), 36);
    assert.deepEqual([...h.subarray(16, 32)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]);
  });
});
