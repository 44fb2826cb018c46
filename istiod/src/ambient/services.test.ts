import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AnyObject, Gateway, Service, ServiceEntry } from '@ambient/common/config/objects';
import {
  AppProtocol,
  GatewayAddressSchema,
  IPFamilies,
  LoadBalancing_HealthPolicy,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  ServiceSchema,
  type Service as WdsService,
} from '@ambient/common/gen/istio/workload/workload_pb';
import { create, toBinary, toJson } from '@bufbuild/protobuf';
import {
  buildKubeService,
  buildServiceEntryServices,
  kubePortAppProtocol,
  pickHostnameOwners,
} from './services.ts';
import { meshSettings } from './settings.ts';
import { AmbientState } from './state.ts';

const S = LoadBalancing_Scope;

function state(objs: AnyObject[], settings = meshSettings()): AmbientState {
  const s = new AmbientState(settings);
  s.upsert([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns1' } }, ...objs]);
  return s;
}

function svc(
  spec: NonNullable<Service['spec']> & Record<string, unknown>,
  meta: Partial<Service['metadata']> = {},
): Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name: 'svc', namespace: 'ns1', ...meta }, spec };
}

function assertService(got: WdsService | undefined, want: WdsService): void {
  assert.ok(got, 'expected a service');
  assert.deepEqual(toJson(ServiceSchema, got), toJson(ServiceSchema, want));
  assert.deepEqual(toBinary(ServiceSchema, got), toBinary(ServiceSchema, want));
}

function build(s: Service, objs: AnyObject[] = [], settings = meshSettings()): WdsService | undefined {
  const st = state([...objs, s], settings);
  return buildKubeService(s, st).services[0];
}

const waypointGateway: Gateway = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name: 'waypoint', namespace: 'ns1' },
  spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
  status: { addresses: [{ type: 'Hostname', value: 'waypoint.ns1.svc.cluster.local' }] },
};

describe('buildKubeService', () => {
  it('builds hostname, VIP, ports (named target → 0) and canonical', () => {
    const got = build(
      svc({
        clusterIP: '10.96.0.10',
        clusterIPs: ['10.96.0.10'],
        ipFamilies: ['IPv4'],
        ports: [
          { name: 'http', port: 80, targetPort: 8080 },
          { name: 'grpc-api', port: 90, targetPort: 'grpc' },
        ],
      }),
    );
    assertService(
      got,
      create(ServiceSchema, {
        name: 'svc',
        namespace: 'ns1',
        hostname: 'svc.ns1.svc.cluster.local',
        addresses: [{ network: '', address: new Uint8Array([10, 96, 0, 10]) }],
        ports: [
          { servicePort: 80, targetPort: 8080, appProtocol: AppProtocol.HTTP11 },
          { servicePort: 90, targetPort: 0, appProtocol: AppProtocol.GRPC },
        ],
        ipFamilies: IPFamilies.IPV4_ONLY,
        canonical: true,
      }),
    );
  });

  it('defaults an absent targetPort to the port, as the API server does', () => {
    assert.deepEqual(
      build(svc({ ports: [{ port: 7000 }] }))?.ports.map((p) => [p.servicePort, p.targetPort]),
      [[7000, 7000]],
    );
  });

  it('uses the domain suffix and network from the settings', () => {
    const got = build(
      svc({ clusterIP: '10.0.0.1' }),
      [],
      meshSettings({ domainSuffix: 'corp.example', network: 'n1' }),
    );
    assert.equal(got?.hostname, 'svc.ns1.svc.corp.example');
    assert.equal(got?.addresses[0]?.network, 'n1');
  });

  it('sends no VIP for a headless service and both VIPs for dual stack', () => {
    assert.deepEqual(build(svc({ clusterIP: 'None', clusterIPs: ['None'] }))?.addresses, []);
    const dual = build(svc({ clusterIPs: ['10.0.0.1', 'fd00::1'], ipFamilies: ['IPv4', 'IPv6'] }));
    assert.equal(dual?.addresses.length, 2);
    assert.equal(dual?.addresses[1]?.address.length, 16);
    assert.equal(dual?.ipFamilies, IPFamilies.DUAL);
  });

  it('does not serve ExternalName services', () => {
    assert.equal(build(svc({ type: 'ExternalName', externalName: 'example.com' })), undefined);
  });

  it('refuses an unparsable VIP with a diagnostic', () => {
    const s = svc({ clusterIP: '10.0.0.300' });
    const built = buildKubeService(s, state([s]));
    assert.deepEqual(built.services, []);
    assert.equal(built.diagnostics[0]?.reason, 'InvalidValue');
  });

  it('maps traffic distribution to FAILOVER routing', () => {
    for (const [s, ns, want] of [
      [svc({ trafficDistribution: 'PreferClose' }), undefined, [S.NETWORK, S.REGION, S.ZONE]],
      [svc({ trafficDistribution: 'PreferSameZone' }), undefined, [S.NETWORK, S.REGION, S.ZONE]],
      [
        svc({}, { annotations: { 'networking.istio.io/traffic-distribution': 'PreferSameNode' } }),
        undefined,
        [S.NETWORK, S.REGION, S.ZONE, S.SUBZONE, S.NODE],
      ],
      [svc({}), { 'networking.istio.io/traffic-distribution': 'preferclose' }, [S.NETWORK, S.REGION, S.ZONE]],
    ] as const) {
      const st = new AmbientState(meshSettings());
      st.upsert([
        {
          apiVersion: 'v1',
          kind: 'Namespace',
          metadata: { name: 'ns1', ...(ns ? { annotations: ns } : {}) },
        },
        s,
      ]);
      const lb = buildKubeService(s, st).services[0]?.loadBalancing;
      assert.deepEqual(lb?.routingPreference, want);
      assert.equal(lb?.mode, LoadBalancing_Mode.FAILOVER);
      assert.equal(lb?.healthPolicy, LoadBalancing_HealthPolicy.ONLY_HEALTHY);
    }
  });

  it('sets ALLOW_ALL for publishNotReadyAddresses, alone or with a distribution', () => {
    const alone = build(svc({ publishNotReadyAddresses: true }))?.loadBalancing;
    assert.deepEqual(alone?.routingPreference, []);
    assert.equal(alone?.mode, LoadBalancing_Mode.UNSPECIFIED_MODE);
    assert.equal(alone?.healthPolicy, LoadBalancing_HealthPolicy.ALLOW_ALL);
    const both = build(
      svc({ publishNotReadyAddresses: true, trafficDistribution: 'PreferClose' }),
    )?.loadBalancing;
    assert.equal(both?.mode, LoadBalancing_Mode.FAILOVER);
    assert.equal(both?.healthPolicy, LoadBalancing_HealthPolicy.ALLOW_ALL);
  });

  it('keeps traffic node-local for internalTrafficPolicy Local', () => {
    const lb = build(
      svc({ internalTrafficPolicy: 'Local', trafficDistribution: 'PreferClose' }),
    )?.loadBalancing;
    assert.deepEqual(lb?.routingPreference, [S.NODE]);
    assert.equal(lb?.mode, LoadBalancing_Mode.STRICT);
  });

  it('binds a service waypoint and reads ingress-use-waypoint', () => {
    const s = svc(
      { clusterIP: '10.0.0.1' },
      { labels: { 'istio.io/use-waypoint': 'waypoint', 'istio.io/ingress-use-waypoint': 'true' } },
    );
    const got = build(s, [waypointGateway]);
    assertService(
      got,
      create(ServiceSchema, {
        name: 'svc',
        namespace: 'ns1',
        hostname: 'svc.ns1.svc.cluster.local',
        addresses: [{ network: '', address: new Uint8Array([10, 0, 0, 1]) }],
        waypoint: create(GatewayAddressSchema, {
          destination: {
            case: 'hostname',
            value: { namespace: 'ns1', hostname: 'waypoint.ns1.svc.cluster.local' },
          },
          hboneMtlsPort: 15008,
        }),
        canonical: true,
        ingressUseWaypoint: true,
      }),
    );
  });

  it('reports a service bound to a workload-only waypoint and leaves it unbound', () => {
    const wl = {
      ...waypointGateway,
      metadata: { ...waypointGateway.metadata, labels: { 'istio.io/waypoint-for': 'workload' } },
    };
    const s = svc({}, { labels: { 'istio.io/use-waypoint': 'waypoint' } });
    const built = buildKubeService(s, state([wl, s]));
    assert.equal(built.services[0]?.waypoint, undefined);
    assert.equal(built.diagnostics[0]?.reason, 'UnsupportedTrafficType');
  });
});

describe('kubePortAppProtocol', () => {
  it('follows ConvertProtocol: appProtocol first, then the name prefix, then well-known ports', () => {
    assert.equal(kubePortAppProtocol({ port: 80, name: 'http' }), AppProtocol.HTTP11);
    assert.equal(kubePortAppProtocol({ port: 80, name: 'http2-x' }), AppProtocol.HTTP2);
    assert.equal(kubePortAppProtocol({ port: 80, name: 'x', appProtocol: 'grpc' }), AppProtocol.GRPC);
    assert.equal(kubePortAppProtocol({ port: 80, appProtocol: 'kubernetes.io/h2c' }), AppProtocol.HTTP2);
    assert.equal(kubePortAppProtocol({ port: 443, name: 'https' }), AppProtocol.TLS);
    assert.equal(kubePortAppProtocol({ port: 80, name: 'grpc-web' }), AppProtocol.UNKNOWN);
    assert.equal(kubePortAppProtocol({ port: 3306 }), AppProtocol.TCP);
    assert.equal(kubePortAppProtocol({ port: 8080 }), AppProtocol.UNKNOWN);
    assert.equal(kubePortAppProtocol({ port: 53, name: 'dns', protocol: 'UDP' }), AppProtocol.UNKNOWN);
    assert.equal(kubePortAppProtocol({ port: 9000, name: 'tcp-x' }), AppProtocol.TCP);
  });
});

function serviceEntry(
  name: string,
  spec: NonNullable<ServiceEntry['spec']> & Record<string, unknown>,
  meta: Partial<ServiceEntry['metadata']> = {},
): ServiceEntry {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'ServiceEntry',
    metadata: { name, namespace: 'ns1', ...meta },
    spec,
  };
}

describe('buildServiceEntryServices', () => {
  it('builds one service per host with CIDR addresses, target ports and SANs', () => {
    const se = serviceEntry('ext', {
      hosts: ['a.example.com', 'b.example.com'],
      addresses: ['240.240.0.1', '10.10.0.7/16'],
      ports: [
        { number: 443, name: 'tls', protocol: 'TLS' },
        { number: 80, name: 'http', protocol: 'HTTP', targetPort: 8080 },
      ],
      resolution: 'STATIC',
      subjectAltNames: ['spiffe://cluster.local/ns/ext/sa/x'],
    });
    const got = buildServiceEntryServices(se, state([se]));
    assert.equal(got.services.length, 2);
    const common = {
      name: 'ext',
      namespace: 'ns1',
      addresses: [
        { network: '', address: new Uint8Array([240, 240, 0, 1]) },
        { network: '', address: new Uint8Array([10, 10, 0, 0]), length: 16 },
      ],
      ports: [
        { servicePort: 443, targetPort: 443, appProtocol: AppProtocol.TLS },
        { servicePort: 80, targetPort: 8080, appProtocol: AppProtocol.HTTP11 },
      ],
      subjectAltNames: ['spiffe://cluster.local/ns/ext/sa/x'],
      canonical: true,
    };
    assertService(got.services[0], create(ServiceSchema, { ...common, hostname: 'a.example.com' }));
    assertService(got.services[1], create(ServiceSchema, { ...common, hostname: 'b.example.com' }));
  });

  it('passes through for resolution NONE', () => {
    const se = serviceEntry('ext', { hosts: ['a.example.com'], resolution: 'NONE' });
    const lb = buildServiceEntryServices(se, state([se])).services[0]?.loadBalancing;
    assert.equal(lb?.mode, LoadBalancing_Mode.PASSTHROUGH);
    assert.equal(lb?.healthPolicy, LoadBalancing_HealthPolicy.ALLOW_ALL);
  });

  it('drops the entry for an unparsable address', () => {
    const se = serviceEntry('ext', { hosts: ['a.example.com'], addresses: ['nope'] });
    const built = buildServiceEntryServices(se, state([se]));
    assert.deepEqual(built.services, []);
    assert.equal(built.diagnostics[0]?.reason, 'InvalidValue');
  });

  it('loses a hostname to a Service of the same namespace and to an older entry', () => {
    const k8s = svc({ clusterIP: '10.0.0.1' });
    const clash = serviceEntry('clash', { hosts: ['svc.ns1.svc.cluster.local', 'own.example.com'] });
    const st = state([k8s, clash]);
    assert.deepEqual(
      buildServiceEntryServices(clash, st).services.map((s) => s.hostname),
      ['own.example.com'],
    );
    const older = serviceEntry(
      'older',
      { hosts: ['x.example.com'] },
      { creationTimestamp: '2024-01-01T00:00:00Z' },
    );
    const newer = serviceEntry(
      'newer',
      { hosts: ['x.example.com'] },
      { creationTimestamp: '2025-01-01T00:00:00Z' },
    );
    const st2 = state([older, newer]);
    assert.equal(buildServiceEntryServices(older, st2).services.length, 1);
    assert.equal(buildServiceEntryServices(newer, st2).services.length, 0);
  });
});

describe('pickHostnameOwners', () => {
  it('picks one publisher per namespace and a single canonical one', () => {
    const r = pickHostnameOwners([
      { kind: 'ServiceEntry', namespace: 'a', name: 'se', created: '2024-01-02T00:00:00Z' },
      { kind: 'ServiceEntry', namespace: 'b', name: 'se', created: '2024-01-01T00:00:00Z' },
    ]);
    assert.equal(r.canonical, 'b');
    assert.equal(r.byNamespace.size, 2);
    const withSvc = pickHostnameOwners([
      { kind: 'ServiceEntry', namespace: 'b', name: 'se', created: '2020-01-01T00:00:00Z' },
      { kind: 'Service', namespace: 'a', name: 'svc', created: '2024-01-01T00:00:00Z' },
      { kind: 'ServiceEntry', namespace: 'a', name: 'se', created: '2020-01-01T00:00:00Z' },
    ]);
    assert.equal(withSvc.canonical, 'a');
    assert.equal(withSvc.byNamespace.get('a')?.kind, 'Service');
  });
});
