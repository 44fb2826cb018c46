import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as wl from '@ambient/common/gen/istio/workload/workload_pb';
import { formatIdentity } from '../identity/identity.ts';
import {
  addressGateway,
  hostnameGateway,
  loadState,
  pbService,
  pbWorkload,
  sequence,
} from './fixtures/wds.ts';
import type { ProxyState } from './proxy-state.ts';
import {
  type OutboundRequest,
  type RoutingOptions,
  resolveUpstream,
  selectEndpoint,
  type UpstreamDecision,
} from './routing.ts';
import type { Workload } from './workload.ts';

const WAYPOINT_HOST = 'waypoint.server.svc.cluster.local';
const WAYPOINT_IDENTITY = 'spiffe://cluster.local/ns/server/sa/waypoint';

/** The mesh every routing case runs against. */
function mesh() {
  return loadState({
    addresses: [
      pbWorkload({
        name: 'src',
        namespace: 'client',
        ips: ['10.0.0.1', 'fd00::1'],
        serviceAccount: 'client',
      }),
      // Plain HBONE backend of `web`.
      pbWorkload({
        name: 'server-1',
        namespace: 'server',
        serviceAccount: 'server',
        ips: ['10.0.1.1', 'fd00::1:1'],
        svc: { 'server/web.server.svc.cluster.local': [[80, 8080]] },
      }),
      pbService({
        name: 'web',
        namespace: 'server',
        vips: ['10.96.0.1', 'fd00::96:1'],
        portPairs: [[80, 8080]],
        ipFamilies: wl.IPFamilies.DUAL,
      }),
      // A TCP (NONE) pod behind `db`.
      pbWorkload({
        name: 'db-0',
        namespace: 'server',
        ips: ['10.0.1.2'],
        tunnelProtocol: wl.TunnelProtocol.NONE,
        svc: { 'server/db.server.svc.cluster.local': [[5432, 5432]] },
      }),
      pbService({ name: 'db', namespace: 'server', vips: ['10.96.0.6'], portPairs: [[5432, 5432]] }),
      // The waypoint and its service.
      pbWorkload({
        name: 'waypoint-0',
        namespace: 'server',
        serviceAccount: 'waypoint',
        ips: ['10.0.1.100'],
        svc: { [`server/${WAYPOINT_HOST}`]: [[15008, 15008]] },
      }),
      pbService({
        name: 'waypoint',
        namespace: 'server',
        vips: ['10.96.0.100'],
        portPairs: [
          [15008, 15008],
          [15021, 15021],
        ],
        subjectAltNames: ['spiffe://cluster.local/ns/server/sa/waypoint-alt', 'not a spiffe id'],
      }),
      // `reviews` goes through the waypoint.
      pbWorkload({
        name: 'reviews-1',
        namespace: 'server',
        ips: ['10.0.1.10'],
        svc: { 'server/reviews.server.svc.cluster.local': [[9080, 9080]] },
      }),
      pbService({
        name: 'reviews',
        namespace: 'server',
        vips: ['10.96.0.2'],
        portPairs: [[9080, 9080]],
        waypoint: hostnameGateway('server', WAYPOINT_HOST),
      }),
      // Same, with the waypoint given by address.
      pbService({
        name: 'ratings',
        namespace: 'server',
        vips: ['10.96.0.7'],
        portPairs: [[9080, 9080]],
        waypoint: addressGateway('10.0.1.100'),
      }),
      pbService({
        name: 'lost',
        namespace: 'server',
        vips: ['10.96.0.8'],
        portPairs: [[80, 80]],
        waypoint: hostnameGateway('server', 'nowhere.server.svc.cluster.local'),
      }),
      // A pod with a workload waypoint.
      pbWorkload({
        name: 'wlwp',
        namespace: 'server',
        ips: ['10.0.1.20'],
        waypoint: hostnameGateway('server', WAYPOINT_HOST),
        svc: { 'server/wlwp-svc.server.svc.cluster.local': [[80, 8080]] },
      }),
      // The same pod is also behind a service: service traffic skips the workload waypoint.
      pbService({ name: 'wlwp-svc', namespace: 'server', vips: ['10.96.0.20'], portPairs: [[80, 8080]] }),
      // A pod with two addresses of one family.
      pbWorkload({ name: 'multi', namespace: 'server', ips: ['10.0.1.30', '10.0.1.31'] }),
      pbService({
        name: 'ext',
        namespace: 'server',
        vips: ['10.96.0.3'],
        portPairs: [[443, 443]],
        loadBalancing: { mode: wl.LoadBalancing_Mode.PASSTHROUGH },
      }),
      pbService({ name: 'empty', namespace: 'server', vips: ['10.96.0.4'], portPairs: [[80, 8080]] }),
      // Multi-network: `global` has one endpoint on net2, reachable only through the gateway.
      pbWorkload({
        name: 'remote-1',
        namespace: 'server',
        network: 'net2',
        networkGateway: hostnameGateway('istio-system', 'eastwest.istio-system.svc.cluster.local'),
        svc: { 'server/global.server.svc.cluster.local': [[80, 8080]] },
      }),
      pbService({
        name: 'global',
        namespace: 'server',
        vips: ['10.96.0.5'],
        portPairs: [[80, 8080]],
        subjectAltNames: ['spiffe://cluster.local/ns/server/sa/global'],
      }),
      pbWorkload({
        name: 'eastwest-0',
        namespace: 'istio-system',
        serviceAccount: 'eastwest',
        network: 'net2',
        ips: ['192.0.2.10'],
        svc: { 'istio-system/eastwest.istio-system.svc.cluster.local': [[15008, 15008]] },
      }),
      pbService({ name: 'eastwest', namespace: 'istio-system', portPairs: [[15008, 15008]] }),
      // A remote endpoint whose network has no gateway.
      pbWorkload({
        name: 'stranded',
        namespace: 'server',
        network: 'net3',
        ips: ['172.16.0.1'],
        svc: { 'server/island.server.svc.cluster.local': [[80, 80]] },
      }),
      pbService({ name: 'island', namespace: 'server', vips: ['10.96.0.9'], portPairs: [[80, 80]] }),
      // A DNS-resolved workload behind a service.
      pbWorkload({
        uid: 'cluster1/networking.istio.io/ServiceEntry/server/dns/ext.example.com',
        name: 'dns',
        namespace: 'server',
        hostname: 'ext.example.com',
        tunnelProtocol: wl.TunnelProtocol.NONE,
        svc: { 'server/ext.example.com': [[443, 443]] },
      }),
      pbService({
        name: 'dns',
        namespace: 'server',
        hostname: 'ext.example.com',
        vips: ['240.240.0.1'],
        portPairs: [[443, 443]],
      }),
    ],
  });
}

function find(state: ProxyState, ip: string): Workload {
  const w = state.findWorkloadByAddress('', ip);
  assert.ok(w, `no workload at ${ip}`);
  return w;
}

/** The decision reduced to what the table compares. */
function summary(d: UpstreamDecision): Record<string, unknown> {
  switch (d.kind) {
    case 'reject':
      return { kind: d.kind, code: d.error.code };
    case 'passthrough':
      return { kind: d.kind, dial: `${d.dial.ip}:${d.dial.port}`, reason: d.reason };
    case 'tcp':
      return {
        kind: d.kind,
        dial: `${d.dial.ip}:${d.dial.port}`,
        workload: d.destinationWorkload.name,
        service: d.destinationService?.name,
      };
    case 'hbone':
      return {
        kind: d.kind,
        route: d.route,
        dial: `${d.dial.ip}:${d.dial.port}`,
        authority: d.authority,
        identities: d.expectedIdentities.map(formatIdentity),
        workload: d.destinationWorkload.name,
        service: d.destinationService?.name,
        ...(d.targetWorkload === undefined ? {} : { target: d.targetWorkload.name }),
      };
    case 'double-hbone':
      return {
        kind: d.kind,
        route: d.route,
        dial: `${d.dial.ip}:${d.dial.port}`,
        authority: d.authority,
        identities: d.expectedIdentities.map(formatIdentity),
        finalIdentities: d.finalIdentities.map(formatIdentity),
        workload: d.destinationWorkload.name,
        final: d.finalWorkload.name,
        service: d.destinationService.name,
      };
  }
}

describe('resolveUpstream (spec §1.5)', () => {
  const { state } = mesh();
  const src = find(state, '10.0.0.1');
  const waypoint = find(state, '10.0.1.100');
  const request = (ip: string, port: number, source = src, sourceIp = '10.0.0.1'): OutboundRequest => ({
    source,
    sourceIp,
    destination: { ip, port },
  });
  const waypointIds = [WAYPOINT_IDENTITY, 'spiffe://cluster.local/ns/server/sa/waypoint-alt'];

  const table: [string, OutboundRequest, Record<string, unknown>][] = [
    ['loopback 15001 is a self-call', request('127.0.0.1', 15001), { kind: 'reject', code: 'SELF_CALL' }],
    ['loopback 15006 is a self-call', request('127.0.0.1', 15006), { kind: 'reject', code: 'SELF_CALL' }],
    ['loopback 15008 is a self-call', request('127.0.0.5', 15008), { kind: 'reject', code: 'SELF_CALL' }],
    ['IPv6 loopback 15008 is a self-call', request('::1', 15008), { kind: 'reject', code: 'SELF_CALL' }],
    [
      'loopback on another port is passthrough',
      request('127.0.0.1', 8080),
      { kind: 'passthrough', dial: '127.0.0.1:8080', reason: 'unknown-destination' },
    ],
    [
      'unknown destination is passthrough',
      request('203.0.113.5', 443),
      { kind: 'passthrough', dial: '203.0.113.5:443', reason: 'unknown-destination' },
    ],
    [
      'PASSTHROUGH service keeps the original destination',
      request('10.96.0.3', 443),
      { kind: 'passthrough', dial: '10.96.0.3:443', reason: 'passthrough-service' },
    ],
    [
      'service VIP without waypoint: HBONE to the endpoint, target port from the service',
      request('10.96.0.1', 80),
      {
        kind: 'hbone',
        route: 'direct',
        dial: '10.0.1.1:15008',
        authority: '10.0.1.1:8080',
        identities: ['spiffe://cluster.local/ns/server/sa/server'],
        workload: 'server-1',
        service: 'web',
      },
    ],
    [
      'IPv6 VIP picks the endpoint IP of the same family',
      request('fd00::96:1', 80),
      {
        kind: 'hbone',
        route: 'direct',
        dial: 'fd00::1:1:15008',
        authority: '[fd00::1:1]:8080',
        identities: ['spiffe://cluster.local/ns/server/sa/server'],
        workload: 'server-1',
        service: 'web',
      },
    ],
    [
      'service VIP on an undeclared port',
      request('10.96.0.1', 81),
      { kind: 'reject', code: 'SERVICE_PORT_UNKNOWN' },
    ],
    ['service without endpoints', request('10.96.0.4', 80), { kind: 'reject', code: 'NO_HEALTHY_UPSTREAM' }],
    [
      'service VIP to a TCP endpoint: plain TCP to ip:targetPort',
      request('10.96.0.6', 5432),
      { kind: 'tcp', dial: '10.0.1.2:5432', workload: 'db-0', service: 'db' },
    ],
    [
      'service waypoint by hostname: authority is the original VIP:port',
      request('10.96.0.2', 9080),
      {
        kind: 'hbone',
        route: 'service-waypoint',
        dial: '10.0.1.100:15008',
        authority: '10.96.0.2:9080',
        identities: waypointIds,
        workload: 'waypoint-0',
        service: 'reviews',
      },
    ],
    [
      'service waypoint by address',
      request('10.96.0.7', 9080),
      {
        kind: 'hbone',
        route: 'service-waypoint',
        dial: '10.0.1.100:15008',
        authority: '10.96.0.7:9080',
        identities: [WAYPOINT_IDENTITY],
        workload: 'waypoint-0',
        service: 'ratings',
      },
    ],
    [
      'service waypoint that does not exist',
      request('10.96.0.8', 80),
      { kind: 'reject', code: 'UNKNOWN_WAYPOINT' },
    ],
    [
      'pod IP direct over HBONE keeps the port',
      request('10.0.1.1', 8080),
      {
        kind: 'hbone',
        route: 'direct',
        dial: '10.0.1.1:15008',
        authority: '10.0.1.1:8080',
        identities: ['spiffe://cluster.local/ns/server/sa/server'],
        workload: 'server-1',
        service: undefined,
      },
    ],
    [
      'pod IP with tunnel_protocol NONE: plain TCP',
      request('10.0.1.2', 5432),
      { kind: 'tcp', dial: '10.0.1.2:5432', workload: 'db-0', service: undefined },
    ],
    [
      'pod IP with a workload waypoint: HBONE to the waypoint, authority = pod ip:port',
      request('10.0.1.20', 8080),
      {
        kind: 'hbone',
        route: 'workload-waypoint',
        dial: '10.0.1.100:15008',
        authority: '10.0.1.20:8080',
        identities: waypointIds,
        workload: 'waypoint-0',
        service: undefined,
        target: 'wlwp',
      },
    ],
    [
      'the waypoint itself reaches the pod directly',
      request('10.0.1.20', 8080, waypoint, '10.0.1.100'),
      {
        kind: 'hbone',
        route: 'direct',
        dial: '10.0.1.20:15008',
        authority: '10.0.1.20:8080',
        identities: ['spiffe://cluster.local/ns/server/sa/default'],
        workload: 'wlwp',
        service: undefined,
      },
    ],
    [
      'the waypoint identity from another IP is not the waypoint',
      request('10.0.1.20', 8080, waypoint, '10.0.0.99'),
      {
        kind: 'hbone',
        route: 'workload-waypoint',
        dial: '10.0.1.100:15008',
        authority: '10.0.1.20:8080',
        identities: waypointIds,
        workload: 'waypoint-0',
        service: undefined,
        target: 'wlwp',
      },
    ],
    [
      'service-addressed traffic to a pod with a workload waypoint goes direct',
      request('10.96.0.20', 80),
      {
        kind: 'hbone',
        route: 'direct',
        dial: '10.0.1.20:15008',
        authority: '10.0.1.20:8080',
        identities: ['spiffe://cluster.local/ns/server/sa/default'],
        workload: 'wlwp',
        service: 'wlwp-svc',
      },
    ],
    [
      'a pod addressed by its second IP is dialled on that IP',
      request('10.0.1.31', 80),
      {
        kind: 'hbone',
        route: 'direct',
        dial: '10.0.1.31:15008',
        authority: '10.0.1.31:80',
        identities: ['spiffe://cluster.local/ns/server/sa/default'],
        workload: 'multi',
        service: undefined,
      },
    ],
    [
      'endpoint on another network: double HBONE through its network gateway',
      request('10.96.0.5', 80),
      {
        kind: 'double-hbone',
        route: 'direct',
        dial: '192.0.2.10:15008',
        authority: 'global.server.svc.cluster.local:80',
        identities: ['spiffe://cluster.local/ns/istio-system/sa/eastwest'],
        finalIdentities: ['spiffe://cluster.local/ns/server/sa/global'],
        workload: 'eastwest-0',
        final: 'remote-1',
        service: 'global',
      },
    ],
    [
      'endpoint on another network without a gateway',
      request('10.96.0.9', 80),
      { kind: 'reject', code: 'NO_VALID_DESTINATION' },
    ],
    [
      'DNS workload without a resolved address yet',
      request('240.240.0.1', 443),
      { kind: 'reject', code: 'HOSTNAME_UNRESOLVED' },
    ],
  ];
  for (const [name, req, want] of table) {
    test(name, () => assert.deepEqual(summary(resolveUpstream(state, req, { random: () => 0 })), want));
  }

  test('DNS workload with resolved addresses dials one of the original family', () => {
    const opts: RoutingOptions = {
      random: () => 0,
      resolveHostname: (h) => (h === 'ext.example.com' ? ['2001:db8::7', '198.51.100.7'] : undefined),
    };
    assert.deepEqual(summary(resolveUpstream(state, request('240.240.0.1', 443), opts)), {
      kind: 'tcp',
      dial: '198.51.100.7:443',
      workload: 'dns',
      service: 'dns',
    });
  });

  test('custom illegal ports and HBONE port', () => {
    const opts: RoutingOptions = { illegalPorts: [25000], hbonePort: 25008 };
    assert.equal(resolveUpstream(state, request('127.0.0.1', 15001), opts).kind, 'passthrough');
    assert.equal(resolveUpstream(state, request('127.0.0.1', 25000), opts).kind, 'reject');
    const d = resolveUpstream(state, request('10.0.1.1', 80), opts);
    assert.equal(d.kind === 'hbone' && `${d.dial.ip}:${d.dial.port}`, '10.0.1.1:25008');
  });
});

describe('waypoints', () => {
  test('weighted waypoints are chosen in proportion to weight; weight 0 never', () => {
    const waypointPod = (name: string, ip: string, sa: string) =>
      pbWorkload({
        name,
        namespace: 'ns',
        serviceAccount: sa,
        ips: [ip],
        svc: { [`ns/${name}.ns.svc.cluster.local`]: [[15008, 15008]] },
      });
    const waypointSvc = (name: string) => pbService({ name, namespace: 'ns', portPairs: [[15008, 15008]] });
    const { state } = loadState({
      addresses: [
        pbWorkload({ name: 'src', namespace: 'ns', ips: ['10.0.0.1'] }),
        waypointPod('wp-a', '10.0.9.1', 'wp-a'),
        waypointPod('wp-b', '10.0.9.2', 'wp-b'),
        waypointPod('wp-c', '10.0.9.3', 'wp-c'),
        waypointSvc('wp-a'),
        waypointSvc('wp-b'),
        waypointSvc('wp-c'),
        pbService({
          name: 'split',
          namespace: 'ns',
          vips: ['10.96.1.1'],
          portPairs: [[80, 80]],
          waypoint: hostnameGateway('ns', 'wp-a.ns.svc.cluster.local'),
          weightedWaypoints: [
            { destination: hostnameGateway('ns', 'wp-a.ns.svc.cluster.local'), weight: 1 },
            { destination: hostnameGateway('ns', 'wp-c.ns.svc.cluster.local'), weight: 0 },
            { destination: hostnameGateway('ns', 'wp-b.ns.svc.cluster.local'), weight: 3 },
          ],
        }),
        pbService({
          name: 'all-zero',
          namespace: 'ns',
          vips: ['10.96.1.2'],
          portPairs: [[80, 80]],
          waypoint: hostnameGateway('ns', 'wp-c.ns.svc.cluster.local'),
          weightedWaypoints: [{ destination: hostnameGateway('ns', 'wp-a.ns.svc.cluster.local'), weight: 0 }],
        }),
      ],
    });
    const source = state.findWorkloadByAddress('', '10.0.0.1') as Workload;
    const pick = (vip: string, r: number) => {
      const d = resolveUpstream(
        state,
        { source, sourceIp: '10.0.0.1', destination: { ip: vip, port: 80 } },
        { random: () => r },
      );
      assert.equal(d.kind, 'hbone');
      return d.kind === 'hbone' ? d.destinationWorkload.name : '';
    };
    // Cumulative weights: a [0, 1), c (0), b [1, 4) out of 4.
    assert.equal(pick('10.96.1.1', 0), 'wp-a');
    assert.equal(pick('10.96.1.1', 0.2499), 'wp-a');
    assert.equal(pick('10.96.1.1', 0.25), 'wp-b');
    assert.equal(pick('10.96.1.1', 0.9999), 'wp-b');
    const counts = new Map<string, number>();
    for (let i = 0; i < 400; i++) {
      const n = pick('10.96.1.1', i / 400);
      counts.set(n, (counts.get(n) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(counts), { 'wp-a': 100, 'wp-b': 300 });
    assert.equal(pick('10.96.1.2', 0.5), 'wp-c', 'all weights zero: the primary waypoint');
  });

  test('a waypoint on another network is reached through its network gateway', () => {
    const { state } = loadState({
      addresses: [
        pbWorkload({ name: 'src', namespace: 'ns', ips: ['10.0.0.1'] }),
        pbWorkload({
          name: 'wp',
          namespace: 'ns',
          network: 'net2',
          networkGateway: addressGateway('192.0.2.10', 'net2'),
          svc: { 'ns/wp.ns.svc.cluster.local': [[15008, 15008]] },
        }),
        pbService({
          name: 'wp',
          namespace: 'ns',
          portPairs: [[15008, 15008]],
          subjectAltNames: ['spiffe://cluster.local/ns/ns/sa/wp'],
        }),
        pbWorkload({
          name: 'gw',
          namespace: 'istio-system',
          serviceAccount: 'gw',
          network: 'net2',
          ips: ['192.0.2.10'],
        }),
        pbService({
          name: 'app',
          namespace: 'ns',
          vips: ['10.96.2.1'],
          portPairs: [[80, 8080]],
          waypoint: hostnameGateway('ns', 'wp.ns.svc.cluster.local'),
        }),
      ],
    });
    const source = state.findWorkloadByAddress('', '10.0.0.1') as Workload;
    const d = resolveUpstream(state, {
      source,
      sourceIp: '10.0.0.1',
      destination: { ip: '10.96.2.1', port: 80 },
    });
    assert.deepEqual(summary(d), {
      kind: 'double-hbone',
      route: 'service-waypoint',
      dial: '192.0.2.10:15008',
      authority: 'app.ns.svc.cluster.local:80',
      identities: ['spiffe://cluster.local/ns/istio-system/sa/gw'],
      finalIdentities: ['spiffe://cluster.local/ns/ns/sa/wp'],
      workload: 'gw',
      final: 'wp',
      service: 'app',
    });
  });
});

describe('selectEndpoint', () => {
  function lbState(loadBalancing?: wl.Service['loadBalancing'] | Record<string, unknown>) {
    const pod = (name: string, ip: string, extra: Parameters<typeof pbWorkload>[0] = {}) =>
      pbWorkload({
        name,
        namespace: 'ns',
        ips: [ip],
        svc: { 'ns/lb.ns.svc.cluster.local': [[80, 8080]] },
        ...extra,
      });
    const locality = (region: string, zone: string, subzone = 's') => ({ region, zone, subzone });
    return loadState({
      addresses: [
        pbWorkload({
          name: 'src',
          namespace: 'ns',
          ips: ['10.0.0.1'],
          locality: locality('r1', 'z1'),
          node: 'node-a',
        }),
        pod('same-zone', '10.1.0.1', { locality: locality('r1', 'z1'), node: 'node-b' }),
        pod('same-node', '10.1.0.2', { locality: locality('r1', 'z1', 'x'), node: 'node-a' }),
        pod('same-region', '10.1.0.3', { locality: locality('r1', 'z2'), node: 'node-c' }),
        pod('far', '10.1.0.4', { locality: locality('r2', 'z9'), node: 'node-d' }),
        pod('sick', '10.1.0.5', {
          locality: locality('r1', 'z1'),
          node: 'node-a',
          status: wl.WorkloadStatus.UNHEALTHY,
        }),
        pbService({
          name: 'lb',
          namespace: 'ns',
          vips: ['10.96.3.1'],
          portPairs: [[80, 8080]],
          ...(loadBalancing === undefined ? {} : { loadBalancing }),
        }),
      ],
    });
  }
  const chosenSet = (state: ProxyState, draws = 64): string[] => {
    const source = state.findWorkloadByAddress('', '10.0.0.1') as Workload;
    const service = state.findServiceByVip('', '10.96.3.1');
    assert.ok(service);
    const names = new Set<string>();
    for (let i = 0; i < draws; i++) {
      const sel = selectEndpoint(state, source, service, 80, { random: () => i / draws });
      if (sel.ok) names.add(sel.workload.name);
    }
    return [...names].sort();
  };

  test('ONLY_HEALTHY (default) drops unhealthy endpoints; standard mode ignores locality', () => {
    assert.deepEqual(chosenSet(lbState().state), ['far', 'same-node', 'same-region', 'same-zone']);
  });

  test('ALLOW_ALL keeps unhealthy endpoints', () => {
    const { state } = lbState({ healthPolicy: wl.LoadBalancing_HealthPolicy.ALLOW_ALL });
    assert.deepEqual(chosenSet(state), ['far', 'same-node', 'same-region', 'same-zone', 'sick']);
  });

  test('FAILOVER keeps the endpoints with the longest matching scope prefix', () => {
    const scopes = [
      wl.LoadBalancing_Scope.NETWORK,
      wl.LoadBalancing_Scope.REGION,
      wl.LoadBalancing_Scope.ZONE,
    ];
    const failover = (extra: wl.LoadBalancing_Scope[]) =>
      chosenSet(
        lbState({ mode: wl.LoadBalancing_Mode.FAILOVER, routingPreference: [...scopes, ...extra] }).state,
      );
    assert.deepEqual(failover([]), ['same-node', 'same-zone']);
    assert.deepEqual(failover([wl.LoadBalancing_Scope.NODE, wl.LoadBalancing_Scope.SUBZONE]), ['same-node']);
    assert.deepEqual(failover([wl.LoadBalancing_Scope.SUBZONE, wl.LoadBalancing_Scope.NODE]), ['same-zone']);
  });

  test('FAILOVER falls back to a lower rank when nothing matches fully', () => {
    const { state } = lbState({
      mode: wl.LoadBalancing_Mode.FAILOVER,
      routingPreference: [wl.LoadBalancing_Scope.REGION, wl.LoadBalancing_Scope.CLUSTER],
    });
    // Everything shares cluster "Kubernetes", so region decides: r1 endpoints rank 2.
    assert.deepEqual(chosenSet(state), ['same-node', 'same-region', 'same-zone']);
    const zoneFirst = lbState({
      mode: wl.LoadBalancing_Mode.FAILOVER,
      routingPreference: [wl.LoadBalancing_Scope.ZONE, wl.LoadBalancing_Scope.REGION],
    });
    assert.deepEqual(chosenSet(zoneFirst.state), ['same-node', 'same-zone']);
  });

  test('STRICT keeps only full matches, or nothing', () => {
    const strict = lbState({
      mode: wl.LoadBalancing_Mode.STRICT,
      routingPreference: [
        wl.LoadBalancing_Scope.REGION,
        wl.LoadBalancing_Scope.ZONE,
        wl.LoadBalancing_Scope.NODE,
      ],
    });
    assert.deepEqual(chosenSet(strict.state), ['same-node']);
    const none = lbState({
      mode: wl.LoadBalancing_Mode.STRICT,
      routingPreference: [wl.LoadBalancing_Scope.NODE, wl.LoadBalancing_Scope.SUBZONE],
    });
    // Only same-node shares the node, and its subzone differs: nothing is a full match.
    const src = none.state.findWorkloadByAddress('', '10.0.0.1') as Workload;
    const svc = none.state.findServiceByVip('', '10.96.3.1');
    assert.ok(svc);
    const sel = selectEndpoint(none.state, src, svc, 80, { random: () => 0 });
    assert.equal(sel.ok, false);
    assert.equal(!sel.ok && sel.code, 'NO_HEALTHY_UPSTREAM');
  });

  test('random choice is weighted by capacity; capacity 0 is never chosen', () => {
    const { state } = loadState({
      addresses: [
        pbWorkload({ name: 'src', namespace: 'ns', ips: ['10.0.0.1'] }),
        pbWorkload({
          name: 'one',
          namespace: 'ns',
          ips: ['10.1.0.1'],
          svc: { 'ns/c.ns.svc.cluster.local': [[80, 80]] },
        }),
        pbWorkload({
          name: 'three',
          namespace: 'ns',
          ips: ['10.1.0.2'],
          capacity: 3,
          svc: { 'ns/c.ns.svc.cluster.local': [[80, 80]] },
        }),
        pbWorkload({
          name: 'zero',
          namespace: 'ns',
          ips: ['10.1.0.3'],
          capacity: 0,
          svc: { 'ns/c.ns.svc.cluster.local': [[80, 80]] },
        }),
        pbService({ name: 'c', namespace: 'ns', vips: ['10.96.4.1'], portPairs: [[80, 80]] }),
      ],
    });
    const source = state.findWorkloadByAddress('', '10.0.0.1') as Workload;
    const service = state.findServiceByVip('', '10.96.4.1');
    assert.ok(service);
    const counts: Record<string, number> = {};
    for (let i = 0; i < 400; i++) {
      const sel = selectEndpoint(state, source, service, 80, { random: () => i / 400 });
      assert.ok(sel.ok);
      counts[sel.workload.name] = (counts[sel.workload.name] ?? 0) + 1;
    }
    assert.deepEqual(counts, { one: 100, three: 300 });
  });

  test('per-endpoint port maps override the service target port; named ports need one', () => {
    const { state } = loadState({
      addresses: [
        pbWorkload({ name: 'src', namespace: 'ns', ips: ['10.0.0.1'] }),
        pbWorkload({
          name: 'mapped',
          namespace: 'ns',
          ips: ['10.1.0.1'],
          svc: { 'ns/named.ns.svc.cluster.local': [[80, 9090]] },
        }),
        pbWorkload({
          name: 'unmapped',
          namespace: 'ns',
          ips: ['10.1.0.2'],
          svc: { 'ns/named.ns.svc.cluster.local': [] },
        }),
        // target_port 0: a named port, only endpoints that map it are usable.
        pbService({ name: 'named', namespace: 'ns', vips: ['10.96.5.1'], portPairs: [[80, 0]] }),
      ],
    });
    const source = state.findWorkloadByAddress('', '10.0.0.1') as Workload;
    const service = state.findServiceByVip('', '10.96.5.1');
    assert.ok(service);
    for (const r of [0, 0.5, 0.99]) {
      const sel = selectEndpoint(state, source, service, 80, { random: sequence(r) });
      assert.ok(sel.ok);
      assert.equal(sel.workload.name, 'mapped');
      assert.equal(sel.targetPort, 9090);
    }
    const d = resolveUpstream(state, {
      source,
      sourceIp: '10.0.0.1',
      destination: { ip: '10.96.5.1', port: 80 },
    });
    assert.equal(d.kind === 'hbone' && d.authority, '10.1.0.1:9090');
  });
});
