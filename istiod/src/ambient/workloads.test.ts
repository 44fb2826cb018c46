import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type {
  AnyObject,
  EndpointSlice,
  Gateway,
  Pod,
  Service,
  ServiceEntry,
  WorkloadEntry,
} from '@ambient/common/config/objects';
import {
  ApplicationTunnel_Protocol,
  GatewayAddressSchema,
  NetworkMode,
  TunnelProtocol,
  type Workload,
  WorkloadSchema,
  WorkloadStatus,
  WorkloadType,
} from '@ambient/common/gen/istio/workload/workload_pb';
import { create, toBinary, toJson } from '@bufbuild/protobuf';
import { meshSettings } from './settings.ts';
import { AmbientState } from './state.ts';
import {
  buildEndpointSliceWorkloads,
  buildPodWorkload,
  buildServiceEntryWorkloads,
  buildWorkloadEntryWorkload,
  podWorkloadOwner,
} from './workloads.ts';

const ns1 = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns1' } } as const;

function state(objs: AnyObject[], settings = meshSettings()): AmbientState {
  const s = new AmbientState(settings);
  s.upsert(objs);
  return s;
}

function assertWorkload(got: Workload | undefined, want: Workload): void {
  assert.ok(got, 'expected a workload');
  assert.deepEqual(toJson(WorkloadSchema, got), toJson(WorkloadSchema, want));
  assert.deepEqual(toBinary(WorkloadSchema, got), toBinary(WorkloadSchema, want));
}

type PodOpts = {
  name?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ips?: string[];
  phase?: NonNullable<Pod['status']>['phase'];
  ready?: boolean;
  hostNetwork?: boolean;
  deleting?: boolean;
  meta?: Record<string, unknown>;
  ports?: { name?: string; containerPort: number; protocol?: 'TCP' | 'UDP' }[];
};

function pod(o: PodOpts = {}): Pod {
  const ips = o.ips ?? ['10.244.1.5'];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: o.name ?? 'p1',
      namespace: 'ns1',
      labels: o.labels ?? { app: 'a' },
      ...(o.annotations ? { annotations: o.annotations } : {}),
      ...(o.deleting ? { deletionTimestamp: '2025-01-01T00:00:00Z' } : {}),
      ...o.meta,
    },
    spec: {
      nodeName: 'node-1',
      serviceAccountName: 'sa1',
      ...(o.hostNetwork ? { hostNetwork: true } : {}),
      containers: [{ name: 'app', ports: o.ports ?? [] }],
    },
    status: {
      phase: o.phase ?? 'Running',
      ...(ips.length ? { podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) } : {}),
      conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
    },
  };
}

function service(name: string, spec: NonNullable<Service['spec']>, ns = 'ns1'): Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec };
}

function build(p: Pod, objs: AnyObject[] = [], settings = meshSettings()) {
  return buildPodWorkload(p, state([ns1, ...objs, p], settings));
}

const waypointAddress = create(GatewayAddressSchema, {
  destination: { case: 'hostname', value: { namespace: 'ns1', hostname: 'waypoint.ns1.svc.cluster.local' } },
  hboneMtlsPort: 15008,
});

function waypoint(waypointFor?: string, status = true): Gateway {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: {
      name: 'waypoint',
      namespace: 'ns1',
      ...(waypointFor ? { labels: { 'istio.io/waypoint-for': waypointFor } } : {}),
    },
    spec: {
      gatewayClassName: 'istio-waypoint',
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
    status: status ? { addresses: [{ type: 'Hostname', value: 'waypoint.ns1.svc.cluster.local' }] } : {},
  };
}

describe('buildPodWorkload', () => {
  it('builds an enrolled Deployment pod with its services (golden)', () => {
    const p = pod({
      name: 'reviews-v1-5d9c7b6b8-abcde',
      labels: { app: 'reviews', version: 'v1', 'pod-template-hash': '5d9c7b6b8' },
      annotations: { 'ambient.istio.io/redirection': 'enabled' },
      ips: ['10.244.1.5', 'fd00::5'],
      ports: [{ name: 'http-web', containerPort: 9090 }],
      meta: {
        generateName: 'reviews-v1-5d9c7b6b8-',
        ownerReferences: [
          {
            apiVersion: 'apps/v1',
            kind: 'ReplicaSet',
            name: 'reviews-v1-5d9c7b6b8',
            uid: 'u',
            controller: true,
          },
        ],
      },
    });
    const svc = service('reviews', {
      selector: { app: 'reviews' },
      clusterIP: '10.96.0.20',
      ports: [
        { name: 'http', port: 80, targetPort: 8080 },
        { name: 'web', port: 81, targetPort: 'http-web' },
        { name: 'admin', port: 82, targetPort: 'admin' },
      ],
    });
    const other = service('other', { selector: { app: 'other' }, ports: [{ port: 1 }] });
    const got = build(p, [svc, other]);
    assert.deepEqual(got.diagnostics, []);
    const v6 = new Uint8Array(16);
    v6.set([0xfd, 0x00], 0);
    v6[15] = 5;
    assertWorkload(
      got.workloads[0],
      create(WorkloadSchema, {
        uid: 'Kubernetes//Pod/ns1/reviews-v1-5d9c7b6b8-abcde',
        name: 'reviews-v1-5d9c7b6b8-abcde',
        namespace: 'ns1',
        addresses: [new Uint8Array([10, 244, 1, 5]), v6],
        tunnelProtocol: TunnelProtocol.HBONE,
        serviceAccount: 'sa1',
        node: 'node-1',
        canonicalName: 'reviews',
        canonicalRevision: 'v1',
        workloadType: WorkloadType.POD,
        workloadName: 'reviews-v1',
        services: {
          'ns1/reviews.ns1.svc.cluster.local': {
            ports: [
              { servicePort: 80, targetPort: 8080 },
              { servicePort: 81, targetPort: 9090 },
            ],
          },
        },
        status: WorkloadStatus.HEALTHY,
        clusterId: 'Kubernetes',
      }),
    );
  });

  it('sends no workload for terminal pods or pods without a valid IP', () => {
    assert.deepEqual(build(pod({ ips: [] })).workloads, []);
    assert.deepEqual(build(pod({ phase: 'Succeeded' })).workloads, []);
    assert.deepEqual(build(pod({ phase: 'Failed' })).workloads, []);
    assert.deepEqual(build(pod({ ips: ['10.0.0.999'] })).workloads, []);
    assert.deepEqual(build(pod({ hostNetwork: true, ips: [] })).workloads, []);
    // Pending with an IP (init containers still running) is a workload.
    assert.equal(build(pod({ phase: 'Pending', ready: false })).workloads.length, 1);
  });

  it('marks host-network pods so ztunnel does not look them up by IP', () => {
    assert.equal(build(pod({ hostNetwork: true })).workloads[0]?.networkMode, NetworkMode.HOST_NETWORK);
  });

  it('uses HBONE only once istio-cni enrolled the pod, or for native HBONE pods', () => {
    assert.equal(build(pod()).workloads[0]?.tunnelProtocol, TunnelProtocol.NONE);
    assert.equal(
      build(pod({ annotations: { 'ambient.istio.io/redirection': 'pending' } })).workloads[0]?.tunnelProtocol,
      TunnelProtocol.NONE,
    );
    const native = build(pod({ labels: { 'networking.istio.io/tunnel': 'http' } })).workloads[0];
    assert.equal(native?.tunnelProtocol, TunnelProtocol.HBONE);
    assert.equal(native?.nativeTunnel, true);
  });

  it('sends the trust domain only when it is not cluster.local, and the network and cluster', () => {
    const w = build(pod(), [], meshSettings({ trustDomain: 'example.org', network: 'net1', clusterId: 'c1' }))
      .workloads[0];
    assert.equal(w?.trustDomain, 'example.org');
    assert.equal(w?.network, 'net1');
    assert.equal(w?.clusterId, 'c1');
    assert.equal(w?.uid, 'c1//Pod/ns1/p1');
  });

  it('is unhealthy when not ready or terminating', () => {
    assert.equal(build(pod({ ready: false })).workloads[0]?.status, WorkloadStatus.UNHEALTHY);
    assert.equal(build(pod({ deleting: true })).workloads[0]?.status, WorkloadStatus.UNHEALTHY);
  });

  it('takes canonical name and revision from labels with fallbacks', () => {
    const w = (labels: Record<string, string>) => build(pod({ labels })).workloads[0];
    assert.equal(
      w({ 'service.istio.io/canonical-name': 'c', 'app.kubernetes.io/name': 'k', app: 'a' })?.canonicalName,
      'c',
    );
    assert.equal(w({ 'app.kubernetes.io/name': 'k', app: 'a' })?.canonicalName, 'k');
    assert.equal(w({})?.canonicalName, 'p1');
    assert.equal(w({ 'app.kubernetes.io/version': '2', version: '1' })?.canonicalRevision, '2');
    assert.equal(w({})?.canonicalRevision, 'latest');
  });

  it('derives the workload name from the controller owner', () => {
    const owner = (kind: string, name: string, labels: Record<string, string> = {}) =>
      podWorkloadOwner(
        pod({
          labels,
          meta: {
            generateName: 'x-',
            ownerReferences: [{ apiVersion: 'v1', kind, name, uid: 'u', controller: true }],
          },
        }),
      );
    assert.deepEqual(owner('ReplicaSet', 'web-7f9', { 'pod-template-hash': '7f9' }), {
      kind: 'Deployment',
      name: 'web',
    });
    assert.deepEqual(owner('ReplicaSet', 'plain-rs'), { kind: 'ReplicaSet', name: 'plain-rs' });
    assert.deepEqual(owner('Job', 'backup-28731420'), { kind: 'CronJob', name: 'backup' });
    assert.deepEqual(owner('Job', 'migrate'), { kind: 'Job', name: 'migrate' });
    assert.deepEqual(owner('StatefulSet', 'db'), { kind: 'StatefulSet', name: 'db' });
    assert.deepEqual(podWorkloadOwner(pod()), { kind: 'Pod', name: 'p1' });
    assert.equal(
      owner('StatefulSet', 'db', { 'service.istio.io/workload-name': 'override' }).name,
      'override',
    );
  });

  it('maps every selecting Service and ServiceEntry, resolving named ports against the pod', () => {
    const p = pod({
      ports: [
        { name: 'http', containerPort: 8080 },
        { name: 'metrics', containerPort: 9000, protocol: 'UDP' },
      ],
    });
    const got = build(p, [
      service('named', {
        selector: { app: 'a' },
        ports: [
          { port: 80, targetPort: 'http' },
          { port: 90, targetPort: 'metrics' },
        ],
      }),
      service('defaulted', { selector: { app: 'a' }, ports: [{ port: 70 }] }),
      service('external', { type: 'ExternalName', externalName: 'x.example.com', selector: { app: 'a' } }),
      service('elsewhere', { selector: { app: 'a' }, ports: [{ port: 1 }] }, 'ns2'),
      {
        apiVersion: 'networking.istio.io/v1',
        kind: 'ServiceEntry',
        metadata: { name: 'se', namespace: 'ns1' },
        spec: {
          hosts: ['se.example.com'],
          ports: [
            { number: 80, name: 'http' },
            { number: 443, name: 'tls', targetPort: 8443 },
          ],
          workloadSelector: { labels: { app: 'a' } },
        },
      },
    ]).workloads[0];
    assert.deepEqual(Object.keys(got?.services ?? {}), [
      'ns1/defaulted.ns1.svc.cluster.local',
      'ns1/named.ns1.svc.cluster.local',
      'ns1/se.example.com',
    ]);
    const ports = (k: string) => got?.services[k]?.ports.map((p) => [p.servicePort, p.targetPort]);
    assert.deepEqual(ports('ns1/named.ns1.svc.cluster.local'), [[80, 8080]]);
    assert.deepEqual(ports('ns1/defaulted.ns1.svc.cluster.local'), [[70, 70]]);
    assert.deepEqual(ports('ns1/se.example.com'), [
      [80, 8080],
      [443, 8443],
    ]);
  });

  it('finds Services without selectors through EndpointSlices naming the pod', () => {
    const p = pod({ meta: { uid: 'pod-uid' } });
    const slice: EndpointSlice = {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'manual-abc', namespace: 'ns1', labels: { 'kubernetes.io/service-name': 'manual' } },
      addressType: 'IPv4',
      endpoints: [
        {
          addresses: ['10.244.1.5'],
          targetRef: { kind: 'Pod', name: 'p1', namespace: 'ns1', uid: 'pod-uid' },
        },
      ],
      ports: [{ name: '', port: 5000, protocol: 'TCP' }],
    };
    const got = build(p, [service('manual', { ports: [{ port: 5000, targetPort: 5000 }] }), slice])
      .workloads[0];
    assert.deepEqual(Object.keys(got?.services ?? {}), ['ns1/manual.ns1.svc.cluster.local']);
    // A slice naming an earlier pod of the same name (another uid) is not this pod's.
    const stale = {
      ...slice,
      endpoints: [{ addresses: ['10.244.1.5'], targetRef: { kind: 'Pod', name: 'p1', uid: 'old' } }],
    };
    assert.deepEqual(
      build(p, [service('manual', { ports: [{ port: 5000 }] }), stale]).workloads[0]?.services,
      {},
    );
  });

  it('lists the selector policies and PeerAuthentication policies that apply', () => {
    const got = build(pod(), [
      {
        apiVersion: 'security.istio.io/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: 'allow-a', namespace: 'ns1' },
        spec: { selector: { matchLabels: { app: 'a' } } },
      },
      {
        apiVersion: 'security.istio.io/v1',
        kind: 'PeerAuthentication',
        metadata: { name: 'default', namespace: 'istio-system' },
        spec: { mtls: { mode: 'STRICT' } },
      },
    ]).workloads[0];
    assert.deepEqual(got?.authorizationPolicies, [
      'ns1/allow-a',
      'istio-system/istio_converted_static_strict',
    ]);
  });

  it('binds a workload waypoint from the pod or namespace label', () => {
    const nsLabelled = { ...ns1, metadata: { name: 'ns1', labels: { 'istio.io/use-waypoint': 'waypoint' } } };
    const bound = buildPodWorkload(pod(), state([nsLabelled, waypoint('workload'), pod()])).workloads[0];
    assert.deepEqual(
      toBinary(GatewayAddressSchema, bound?.waypoint ?? create(GatewayAddressSchema)),
      toBinary(GatewayAddressSchema, waypointAddress),
    );
    // Namespace binding to a service-only waypoint: the pod gets none, silently.
    const svcOnly = buildPodWorkload(pod(), state([nsLabelled, waypoint(), pod()]));
    assert.equal(svcOnly.workloads[0]?.waypoint, undefined);
    assert.deepEqual(svcOnly.diagnostics, []);
    // Explicit pod label to a service-only waypoint: none, reported.
    const explicit = build(pod({ labels: { app: 'a', 'istio.io/use-waypoint': 'waypoint' } }), [waypoint()]);
    assert.equal(explicit.workloads[0]?.waypoint, undefined);
    assert.equal(explicit.diagnostics[0]?.reason, 'UnsupportedTrafficType');
    // Opt-out and not-ready.
    const optOut = pod({ labels: { 'istio.io/use-waypoint': 'none' } });
    assert.equal(
      buildPodWorkload(optOut, state([nsLabelled, waypoint('all'), optOut])).workloads[0]?.waypoint,
      undefined,
    );
    const notReady = buildPodWorkload(pod(), state([nsLabelled, waypoint('all', false), pod()]));
    assert.equal(notReady.workloads[0]?.waypoint, undefined);
    assert.equal(notReady.diagnostics[0]?.reason, 'WaypointIsNotReady');
  });

  it('never gives a waypoint pod a waypoint, and passes its sandwich binding', () => {
    const nsLabelled = { ...ns1, metadata: { name: 'ns1', labels: { 'istio.io/use-waypoint': 'waypoint' } } };
    const gw = waypoint('all');
    const wpPod = pod({
      name: 'waypoint-xyz',
      labels: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' },
    });
    assert.equal(buildPodWorkload(wpPod, state([nsLabelled, gw, wpPod])).workloads[0]?.waypoint, undefined);
    const sandwich: Gateway = {
      ...gw,
      metadata: {
        ...gw.metadata,
        annotations: { 'ambient.istio.io/waypoint-inbound-binding': 'PROXY/15088' },
      },
    };
    const w = buildPodWorkload(wpPod, state([nsLabelled, sandwich, wpPod])).workloads[0];
    assert.equal(w?.applicationTunnel?.protocol, ApplicationTunnel_Protocol.PROXY);
    assert.equal(w?.applicationTunnel?.port, 15088);
  });
});

describe('buildWorkloadEntryWorkload', () => {
  it('builds a VM workload (golden)', () => {
    const we: WorkloadEntry = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'WorkloadEntry',
      metadata: { name: 'vm1', namespace: 'ns1', labels: { app: 'vm' } },
      spec: {
        address: '192.168.1.10',
        serviceAccount: 'vm-sa',
        network: 'vm-net',
        locality: 'us-east/zone-a',
        weight: 3,
        ports: { http: 8081 },
        labels: { version: 'v2' },
      },
    };
    const svc = service('vm-svc', {
      selector: { app: 'vm' },
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
    });
    const got = buildWorkloadEntryWorkload(we, state([ns1, svc, we]));
    assertWorkload(
      got.workloads[0],
      create(WorkloadSchema, {
        uid: 'Kubernetes/networking.istio.io/WorkloadEntry/ns1/vm1',
        name: 'vm1',
        namespace: 'ns1',
        addresses: [new Uint8Array([192, 168, 1, 10])],
        network: 'vm-net',
        serviceAccount: 'vm-sa',
        canonicalName: 'vm',
        canonicalRevision: 'v2',
        workloadType: WorkloadType.POD,
        workloadName: 'vm1',
        services: { 'ns1/vm-svc.ns1.svc.cluster.local': { ports: [{ servicePort: 80, targetPort: 8081 }] } },
        status: WorkloadStatus.HEALTHY,
        clusterId: 'Kubernetes',
        locality: { region: 'us-east', zone: 'zone-a' },
        capacity: 3,
      }),
    );
  });

  it('addresses a hostname entry by hostname', () => {
    const we: WorkloadEntry = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'WorkloadEntry',
      metadata: { name: 'dns', namespace: 'ns1' },
      spec: { address: 'vm.example.com' },
    };
    const w = buildWorkloadEntryWorkload(we, state([ns1, we])).workloads[0];
    assert.equal(w?.hostname, 'vm.example.com');
    assert.deepEqual(w?.addresses, []);
  });
});

describe('buildServiceEntryWorkloads', () => {
  it('turns inline endpoints into workloads (golden)', () => {
    const se: ServiceEntry = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'db', namespace: 'ns1', labels: { app: 'db' } },
      spec: {
        hosts: ['db.example.com'],
        ports: [{ number: 5432, name: 'pg', protocol: 'TCP' }],
        resolution: 'STATIC',
        endpoints: [
          { address: '10.1.0.1', ports: { pg: 15432 }, serviceAccount: 'db-sa' },
          { address: '10.1.0.2' },
        ],
      },
    };
    const got = buildServiceEntryWorkloads(se, state([ns1, se]));
    const base = {
      name: 'db',
      namespace: 'ns1',
      canonicalName: 'db',
      canonicalRevision: 'latest',
      workloadType: WorkloadType.POD,
      workloadName: 'db',
      status: WorkloadStatus.HEALTHY,
      clusterId: 'Kubernetes',
    };
    assert.equal(got.workloads.length, 2);
    assertWorkload(
      got.workloads[0],
      create(WorkloadSchema, {
        ...base,
        uid: 'Kubernetes/networking.istio.io/ServiceEntry/ns1/db/10.1.0.1',
        addresses: [new Uint8Array([10, 1, 0, 1])],
        serviceAccount: 'db-sa',
        services: { 'ns1/db.example.com': { ports: [{ servicePort: 5432, targetPort: 15432 }] } },
      }),
    );
    assertWorkload(
      got.workloads[1],
      create(WorkloadSchema, {
        ...base,
        uid: 'Kubernetes/networking.istio.io/ServiceEntry/ns1/db/10.1.0.2',
        addresses: [new Uint8Array([10, 1, 0, 2])],
        services: { 'ns1/db.example.com': { ports: [{ servicePort: 5432, targetPort: 5432 }] } },
      }),
    );
  });

  it('gives a DNS entry without endpoints one hostname workload per host', () => {
    const se: ServiceEntry = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'ext', namespace: 'ns1' },
      spec: {
        hosts: ['a.example.com', 'b.example.com'],
        ports: [{ number: 443, name: 'tls' }],
        resolution: 'DNS',
      },
    };
    const got = buildServiceEntryWorkloads(se, state([ns1, se])).workloads;
    assert.deepEqual(
      got.map((w) => [w.uid, w.hostname, Object.keys(w.services)]),
      [
        [
          'Kubernetes/networking.istio.io/ServiceEntry/ns1/ext/a.example.com',
          'a.example.com',
          ['ns1/a.example.com'],
        ],
        [
          'Kubernetes/networking.istio.io/ServiceEntry/ns1/ext/b.example.com',
          'b.example.com',
          ['ns1/b.example.com'],
        ],
      ],
    );
    assert.deepEqual(
      buildServiceEntryWorkloads({ ...se, spec: { ...se.spec, resolution: 'NONE' } }, state([ns1, se]))
        .workloads,
      [],
    );
  });
});

describe('buildEndpointSliceWorkloads', () => {
  it('builds the non-pod addresses of a Service without a selector', () => {
    const svc = service('ext', { ports: [{ name: 'http', port: 80 }] });
    const slice: EndpointSlice = {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'ext-1', namespace: 'ns1', labels: { 'kubernetes.io/service-name': 'ext' } },
      addressType: 'IPv4',
      endpoints: [
        { addresses: ['192.0.2.10'], conditions: { ready: true } },
        { addresses: ['192.0.2.11'], conditions: { ready: false } },
        { addresses: ['10.244.0.9'], targetRef: { kind: 'Pod', name: 'p' } },
      ],
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    };
    const got = buildEndpointSliceWorkloads(slice, state([ns1, svc, slice])).workloads;
    assert.equal(got.length, 2);
    assertWorkload(
      got[0],
      create(WorkloadSchema, {
        uid: 'Kubernetes/discovery.k8s.io/EndpointSlice/ns1/ext-1/192.0.2.10',
        name: 'ext-1',
        namespace: 'ns1',
        addresses: [new Uint8Array([192, 0, 2, 10])],
        services: { 'ns1/ext.ns1.svc.cluster.local': { ports: [{ servicePort: 80, targetPort: 8080 }] } },
        status: WorkloadStatus.HEALTHY,
        clusterId: 'Kubernetes',
        networkMode: NetworkMode.HOST_NETWORK,
      }),
    );
    assert.equal(got[1]?.status, WorkloadStatus.UNHEALTHY);
  });
});
