import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Gateway, Namespace, Service } from '@ambient/common/config/objects';
import {
  ApplicationTunnel_Protocol,
  GatewayAddressSchema,
  WeightedWaypointSchema,
} from '@ambient/common/gen/istio/workload/workload_pb';
import { create, toBinary } from '@bufbuild/protobuf';
import { meshSettings } from './settings.ts';
import { AmbientState } from './state.ts';
import {
  requestedWaypoints,
  useWaypointLabel,
  waypointForService,
  waypointForWorkload,
  waypointFromGateway,
  waypointInstanceOf,
  weightedWaypoints,
} from './waypoints.ts';

const settings = meshSettings({ network: 'net1' });

function gateway(
  ns: string,
  name: string,
  opts: Partial<Gateway> & { labels?: Record<string, string> } = {},
): Gateway {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace: ns, ...(opts.labels ? { labels: opts.labels } : {}), ...opts.metadata },
    spec: opts.spec ?? {
      gatewayClassName: 'istio-waypoint',
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
    status: opts.status ?? { addresses: [{ type: 'Hostname', value: `${name}.${ns}.svc.cluster.local` }] },
  };
}

function namespace(name: string, labels?: Record<string, string>): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, ...(labels ? { labels } : {}) } };
}

function hostnameAddress(ns: string, host: string) {
  return create(GatewayAddressSchema, {
    destination: { case: 'hostname', value: { namespace: ns, hostname: host } },
    hboneMtlsPort: 15008,
  });
}

describe('waypointFromGateway', () => {
  it('uses the status hostname with HBONE port 15008 and defaults waypoint-for to service', () => {
    const w = waypointFromGateway(gateway('ns1', 'waypoint'), settings);
    assert.ok(w);
    assert.deepEqual(
      toBinary(GatewayAddressSchema, w.address),
      toBinary(GatewayAddressSchema, hostnameAddress('ns1', 'waypoint.ns1.svc.cluster.local')),
    );
    assert.equal(w.trafficType, 'service');
    assert.deepEqual(w.allowedRoutes, { from: 'Same' });
  });

  it('falls back to an IP status address on the local network', () => {
    const w = waypointFromGateway(
      gateway('ns1', 'wp', { status: { addresses: [{ value: '10.9.0.1' }] } }),
      settings,
    );
    assert.ok(w);
    const want = create(GatewayAddressSchema, {
      destination: { case: 'address', value: { network: 'net1', address: new Uint8Array([10, 9, 0, 1]) } },
      hboneMtlsPort: 15008,
    });
    assert.deepEqual(toBinary(GatewayAddressSchema, w.address), toBinary(GatewayAddressSchema, want));
  });

  it('is not a waypoint without status addresses or with another class', () => {
    assert.equal(waypointFromGateway(gateway('ns1', 'wp', { status: {} }), settings), undefined);
    assert.equal(
      waypointFromGateway(
        gateway('ns1', 'wp', { spec: { gatewayClassName: 'istio', listeners: [] } }),
        settings,
      ),
      undefined,
    );
  });

  it('reads waypoint-for, allowedRoutes and the sandwich binding', () => {
    const w = waypointFromGateway(
      gateway('ns1', 'wp', {
        labels: { 'istio.io/waypoint-for': 'all' },
        metadata: {
          name: 'wp',
          namespace: 'ns1',
          annotations: { 'ambient.istio.io/waypoint-inbound-binding': 'PROXY/15088' },
        },
        spec: {
          gatewayClassName: 'istio-waypoint',
          listeners: [
            { name: 'mesh', port: 15008, protocol: 'HBONE' },
            {
              name: 'proxy',
              port: 15088,
              protocol: 'istio.io/PROXY',
              allowedRoutes: { namespaces: { from: 'Selector', selector: { matchLabels: { team: 'a' } } } },
            },
          ],
        },
      }),
      settings,
    );
    assert.ok(w);
    assert.equal(w.trafficType, 'all');
    assert.deepEqual(w.inboundBinding, { protocol: ApplicationTunnel_Protocol.PROXY, port: 15088 });
    assert.deepEqual(w.allowedRoutes, { from: 'Selector', selector: { matchLabels: { team: 'a' } } });
  });
});

describe('useWaypointLabel', () => {
  it('parses name, namespace override and none', () => {
    assert.deepEqual(useWaypointLabel({ labels: { 'istio.io/use-waypoint': 'wp' } }, 'ns1'), {
      ref: { namespace: 'ns1', name: 'wp' },
      none: false,
    });
    assert.deepEqual(
      useWaypointLabel(
        { labels: { 'istio.io/use-waypoint': 'wp', 'istio.io/use-waypoint-namespace': 'x' } },
        'ns1',
      ),
      { ref: { namespace: 'x', name: 'wp' }, none: false },
    );
    assert.deepEqual(useWaypointLabel({ labels: { 'istio.io/use-waypoint': 'none' } }, 'ns1'), {
      none: true,
    });
    assert.deepEqual(useWaypointLabel({}, 'ns1'), { none: false });
  });
});

describe('waypoint binding', () => {
  function state(...objs: Parameters<AmbientState['upsert']>[0]) {
    const s = new AmbientState(settings);
    s.upsert(objs);
    return s;
  }

  it('binds a service to a service waypoint named by its namespace', () => {
    const s = state(namespace('ns1', { 'istio.io/use-waypoint': 'waypoint' }), gateway('ns1', 'waypoint'));
    const b = waypointForService({ name: 'svc', namespace: 'ns1' }, s);
    assert.equal(b.waypoint?.name, 'waypoint');
    assert.equal(b.error, undefined);
  });

  it('does not bind a workload to a service-only waypoint; an explicit label is reported', () => {
    const s = state(namespace('ns1', { 'istio.io/use-waypoint': 'waypoint' }), gateway('ns1', 'waypoint'));
    assert.deepEqual(waypointForWorkload({ name: 'p', namespace: 'ns1' }, s), {});
    const b = waypointForWorkload(
      { name: 'p', namespace: 'ns1', labels: { 'istio.io/use-waypoint': 'waypoint' } },
      s,
    );
    assert.equal(b.waypoint, undefined);
    assert.equal(b.error?.reason, 'UnsupportedTrafficType');
  });

  it('binds workloads to workload and all waypoints', () => {
    const s = state(
      namespace('ns1'),
      gateway('ns1', 'wl', { labels: { 'istio.io/waypoint-for': 'workload' } }),
      gateway('ns1', 'all', { labels: { 'istio.io/waypoint-for': 'all' } }),
    );
    assert.equal(
      waypointForWorkload({ name: 'p', namespace: 'ns1', labels: { 'istio.io/use-waypoint': 'wl' } }, s)
        .waypoint?.name,
      'wl',
    );
    assert.equal(
      waypointForWorkload({ name: 'p', namespace: 'ns1', labels: { 'istio.io/use-waypoint': 'all' } }, s)
        .waypoint?.name,
      'all',
    );
    assert.equal(
      waypointForService({ name: 's', namespace: 'ns1', labels: { 'istio.io/use-waypoint': 'wl' } }, s).error
        ?.reason,
      'UnsupportedTrafficType',
    );
  });

  it('lets the object opt out of its namespace waypoint with none', () => {
    const s = state(namespace('ns1', { 'istio.io/use-waypoint': 'waypoint' }), gateway('ns1', 'waypoint'));
    assert.deepEqual(
      waypointForService({ name: 'svc', namespace: 'ns1', labels: { 'istio.io/use-waypoint': 'none' } }, s),
      {},
    );
  });

  it('reports a waypoint that is not ready (no status address yet)', () => {
    const s = state(
      namespace('ns1', { 'istio.io/use-waypoint': 'waypoint' }),
      gateway('ns1', 'waypoint', { status: {} }),
    );
    assert.deepEqual(waypointForService({ name: 'svc', namespace: 'ns1' }, s), {
      error: { reason: 'WaypointIsNotReady', message: 'waypoint "ns1/waypoint" is not ready' },
    });
  });

  it('follows allowedRoutes for cross-namespace use', () => {
    const s = state(
      namespace('ns1', { team: 'a' }),
      namespace('ns2'),
      gateway('shared', 'same'),
      gateway('shared', 'sel', {
        spec: {
          gatewayClassName: 'istio-waypoint',
          listeners: [
            {
              name: 'mesh',
              port: 15008,
              protocol: 'HBONE',
              allowedRoutes: { namespaces: { from: 'Selector', selector: { matchLabels: { team: 'a' } } } },
            },
          ],
        },
      }),
    );
    const ref = (name: string) => ({
      'istio.io/use-waypoint': name,
      'istio.io/use-waypoint-namespace': 'shared',
    });
    assert.equal(
      waypointForService({ name: 's', namespace: 'ns1', labels: ref('same') }, s).error?.reason,
      'AttachmentDenied',
    );
    assert.equal(
      waypointForService({ name: 's', namespace: 'ns1', labels: ref('sel') }, s).waypoint?.name,
      'sel',
    );
    assert.equal(
      waypointForService({ name: 's', namespace: 'ns2', labels: ref('sel') }, s).error?.reason,
      'AttachmentDenied',
    );
  });

  it('never gives a waypoint its own waypoint', () => {
    const s = state(namespace('ns1', { 'istio.io/use-waypoint': 'waypoint' }), gateway('ns1', 'waypoint'));
    const svcMeta = {
      name: 'waypoint',
      namespace: 'ns1',
      labels: { 'gateway.istio.io/managed': 'istio.io-mesh-controller' },
    };
    assert.deepEqual(waypointForService(svcMeta, s), {});
    assert.deepEqual(
      waypointInstanceOf(
        {
          name: 'wp-pod',
          namespace: 'ns1',
          labels: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' },
        },
        s,
      ).instance,
      true,
    );
  });

  it('records requested waypoints even when they do not exist', () => {
    const s = state(namespace('ns1', { 'istio.io/use-waypoint': 'later' }));
    assert.deepEqual(requestedWaypoints({ name: 'x', namespace: 'ns1' }, s), ['ns1/later']);
    assert.deepEqual(
      requestedWaypoints({ name: 'x', namespace: 'ns1', labels: { 'istio.io/use-waypoint': 'none' } }, s),
      [],
    );
  });

  it('builds weighted canary waypoints', () => {
    const s = state(namespace('ns1'), gateway('ns1', 'primary'), gateway('ns1', 'canary'));
    const svc: Service = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: {
        name: 's',
        namespace: 'ns1',
        labels: { 'istio.io/use-waypoint': 'primary', 'istio.io/use-waypoint-canary': 'canary' },
        annotations: { 'istio.io/use-waypoint-canary-weight': '20' },
      },
    };
    const primary = waypointForService(svc.metadata, s).waypoint;
    const got = weightedWaypoints(svc.metadata, primary, s);
    assert.equal(got.error, undefined);
    const want = [
      create(WeightedWaypointSchema, {
        destination: hostnameAddress('ns1', 'primary.ns1.svc.cluster.local'),
        weight: 80,
      }),
      create(WeightedWaypointSchema, {
        destination: hostnameAddress('ns1', 'canary.ns1.svc.cluster.local'),
        weight: 20,
      }),
    ];
    assert.deepEqual(
      got.weighted.map((w) => toBinary(WeightedWaypointSchema, w)),
      want.map((w) => toBinary(WeightedWaypointSchema, w)),
    );
    const bad = { ...svc.metadata, annotations: { 'istio.io/use-waypoint-canary-weight': '101' } };
    assert.equal(weightedWaypoints(bad, primary, s).error?.reason, 'CanaryInvalidWeight');
  });
});
