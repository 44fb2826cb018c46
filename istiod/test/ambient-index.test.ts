import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type {
  AnyObject,
  AuthorizationPolicy,
  EndpointSlice,
  Gateway,
  Namespace,
  PeerAuthentication,
  Pod,
  Service,
  ServiceEntry,
} from '@ambient/common/config/objects';
import { ConfigStore } from '@ambient/common/config/store';
import { AuthorizationSchema } from '@ambient/common/gen/istio/security/authorization_pb';
import { AddressSchema, type Workload } from '@ambient/common/gen/istio/workload/workload_pb';
import { logger } from '@ambient/common/log';
import { fromBinary } from '@bufbuild/protobuf';
import {
  ADDRESS_TYPE_URL,
  AmbientIndex,
  AUTHORIZATION_TYPE_URL,
  contentVersion,
} from '../src/ambient/index.ts';
import { meshSettings } from '../src/ambient/settings.ts';
import type { ResourcesUpdated } from '../src/xds/resources.ts';

const quiet = logger('ambient-test');
quiet.level = 'silent';

function ns(name: string, labels?: Record<string, string>): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, ...(labels ? { labels } : {}) } };
}

function pod(name: string, namespace: string, ip: string, labels: Record<string, string>): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec: { nodeName: 'node-1', serviceAccountName: 'default', containers: [{ name: 'c' }] },
    status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

function service(
  name: string,
  namespace: string,
  selector: Record<string, string>,
  ip: string,
  labels?: Record<string, string>,
): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace, ...(labels ? { labels } : {}) },
    spec: { selector, clusterIP: ip, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
  };
}

function policy(name: string, namespace: string, selector?: Record<string, string>): AuthorizationPolicy {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace },
    spec: {
      ...(selector ? { selector: { matchLabels: selector } } : {}),
      action: 'DENY',
      rules: [{ from: [{ source: { namespaces: ['bad'] } }] }],
    },
  };
}

const uid = (namespace: string, name: string) => `Kubernetes//Pod/${namespace}/${name}`;

/** A store + index pair recording every `updated` event. */
function setup(objects: AnyObject[] = []) {
  const store = new ConfigStore();
  store.apply({ upsert: objects });
  const index = new AmbientIndex(store, meshSettings(), quiet);
  const events: ResourcesUpdated[] = [];
  index.on('updated', (u) => events.push(u));
  const take = () => {
    const out: Record<string, string[]> = {};
    for (const e of events.splice(0)) out[e.typeUrl] = [...(out[e.typeUrl] ?? []), ...e.names].sort();
    return out;
  };
  const workload = (name: string): Workload => {
    const m = index.address(name);
    assert.ok(m && m.$typeName === 'istio.workload.Workload', `no workload ${name}`);
    return m as Workload;
  };
  return { store, index, take, workload };
}

describe('AmbientIndex', () => {
  it('serves encoded, content-versioned Address and Authorization resources', () => {
    const { index } = setup([
      ns('ns1'),
      pod('a1', 'ns1', '10.0.0.1', { app: 'a' }),
      service('svc-a', 'ns1', { app: 'a' }, '10.96.0.1'),
      policy('deny-bad', 'ns1'),
    ]);
    assert.deepEqual(index.typeUrls(), [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL]);
    assert.deepEqual([...index.names(ADDRESS_TYPE_URL)].sort(), [
      uid('ns1', 'a1'),
      'ns1/svc-a.ns1.svc.cluster.local',
    ]);
    const r = index.get(ADDRESS_TYPE_URL, uid('ns1', 'a1'));
    assert.ok(r);
    assert.equal(r.version, contentVersion(r.value));
    assert.match(r.version, /^[0-9a-f]{16}$/);
    assert.deepEqual(r.aliases, ['/10.0.0.1']);
    const decoded = fromBinary(AddressSchema, r.value);
    assert.equal(decoded.type.case, 'workload');
    assert.deepEqual(Object.keys(decoded.type.case === 'workload' ? decoded.type.value.services : {}), [
      'ns1/svc-a.ns1.svc.cluster.local',
    ]);
    const svc = fromBinary(
      AddressSchema,
      index.get(ADDRESS_TYPE_URL, 'ns1/svc-a.ns1.svc.cluster.local')?.value ?? new Uint8Array(),
    );
    assert.equal(svc.type.case, 'service');
    const auth = index.get(AUTHORIZATION_TYPE_URL, 'ns1/deny-bad');
    assert.ok(auth);
    assert.equal(fromBinary(AuthorizationSchema, auth.value).name, 'deny-bad');
  });

  it('rebuilds a Service and exactly the pods its old and new selectors select', () => {
    const { store, take, workload } = setup([
      ns('ns1'),
      pod('a1', 'ns1', '10.0.0.1', { app: 'a' }),
      pod('a2', 'ns1', '10.0.0.2', { app: 'a' }),
      pod('b1', 'ns1', '10.0.0.3', { app: 'b' }),
      pod('a-other-ns', 'ns2', '10.0.1.1', { app: 'a' }),
    ]);
    store.apply({ upsert: [service('svc', 'ns1', { app: 'a' }, '10.96.0.1')] });
    assert.deepEqual(take(), {
      [ADDRESS_TYPE_URL]: ['ns1/svc.ns1.svc.cluster.local', uid('ns1', 'a1'), uid('ns1', 'a2')].sort(),
    });
    assert.deepEqual(Object.keys(workload(uid('ns1', 'a1')).services), ['ns1/svc.ns1.svc.cluster.local']);

    store.apply({ upsert: [service('svc', 'ns1', { app: 'b' }, '10.96.0.1')] });
    // The Service's bytes are unchanged (selectors are not on the wire); the three pods changed.
    assert.deepEqual(take(), {
      [ADDRESS_TYPE_URL]: [uid('ns1', 'a1'), uid('ns1', 'a2'), uid('ns1', 'b1')].sort(),
    });
    assert.deepEqual(workload(uid('ns1', 'a1')).services, {});
    assert.deepEqual(Object.keys(workload(uid('ns1', 'b1')).services), ['ns1/svc.ns1.svc.cluster.local']);
  });

  it('rebuilds a namespace’s pods and services when its labels change', () => {
    const gw: Gateway = {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: 'waypoint', namespace: 'ns1', labels: { 'istio.io/waypoint-for': 'all' } },
      spec: {
        gatewayClassName: 'istio-waypoint',
        listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      },
      status: { addresses: [{ type: 'Hostname', value: 'waypoint.ns1.svc.cluster.local' }] },
    };
    const { store, take, workload, index } = setup([
      ns('ns1'),
      ns('ns2'),
      gw,
      pod('a1', 'ns1', '10.0.0.1', { app: 'a' }),
      pod('b1', 'ns1', '10.0.0.2', { app: 'b' }),
      pod('c1', 'ns2', '10.0.1.1', { app: 'c' }),
      service('svc', 'ns1', { app: 'a' }, '10.96.0.1'),
    ]);
    store.apply({ upsert: [ns('ns1', { 'istio.io/use-waypoint': 'waypoint' })] });
    assert.deepEqual(take(), {
      [ADDRESS_TYPE_URL]: [uid('ns1', 'a1'), uid('ns1', 'b1'), 'ns1/svc.ns1.svc.cluster.local'].sort(),
    });
    assert.equal(workload(uid('ns1', 'a1')).waypoint?.destination.case, 'hostname');
    const svc = index.address('ns1/svc.ns1.svc.cluster.local');
    assert.equal(svc?.$typeName === 'istio.workload.Service' ? svc.waypoint?.hboneMtlsPort : 0, 15008);

    // An annotation-only change that affects nothing still re-checks but emits nothing.
    store.apply({
      upsert: [
        {
          ...ns('ns1', { 'istio.io/use-waypoint': 'waypoint' }),
          metadata: {
            name: 'ns1',
            labels: { 'istio.io/use-waypoint': 'waypoint' },
            annotations: { note: 'x' },
          },
        },
      ],
    });
    assert.deepEqual(take(), {});
  });

  it('binds waiting workloads when their waypoint Gateway becomes ready', () => {
    const { store, take, workload } = setup([
      ns('ns1', { 'istio.io/use-waypoint': 'waypoint' }),
      pod('a1', 'ns1', '10.0.0.1', { app: 'a' }),
    ]);
    assert.equal(workload(uid('ns1', 'a1')).waypoint, undefined);
    const gw: Gateway = {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: 'waypoint', namespace: 'ns1', labels: { 'istio.io/waypoint-for': 'workload' } },
      spec: {
        gatewayClassName: 'istio-waypoint',
        listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      },
    };
    store.apply({ upsert: [gw] });
    assert.deepEqual(take(), {});
    store.apply({
      upsert: [
        { ...gw, status: { addresses: [{ type: 'Hostname', value: 'waypoint.ns1.svc.cluster.local' }] } },
      ],
    });
    assert.deepEqual(take(), { [ADDRESS_TYPE_URL]: [uid('ns1', 'a1')] });
    assert.equal(workload(uid('ns1', 'a1')).waypoint?.hboneMtlsPort, 15008);
  });

  it('rebuilds Authorizations and the policy lists of selected workloads on policy changes', () => {
    const { store, take, workload, index } = setup([
      ns('ns1'),
      ns('ns2'),
      pod('a1', 'ns1', '10.0.0.1', { app: 'a' }),
      pod('b1', 'ns1', '10.0.0.2', { app: 'b' }),
      pod('a2', 'ns2', '10.0.1.1', { app: 'a' }),
    ]);
    store.apply({ upsert: [policy('deny', 'ns1', { app: 'a' })] });
    assert.deepEqual(take(), {
      [ADDRESS_TYPE_URL]: [uid('ns1', 'a1')],
      [AUTHORIZATION_TYPE_URL]: ['ns1/deny'],
    });
    assert.deepEqual(workload(uid('ns1', 'a1')).authorizationPolicies, ['ns1/deny']);

    // A root-namespace policy reaches selected workloads in every namespace.
    store.apply({ upsert: [policy('mesh-deny', 'istio-system', { app: 'a' })] });
    assert.deepEqual(take(), {
      [ADDRESS_TYPE_URL]: [uid('ns1', 'a1'), uid('ns2', 'a2')].sort(),
      [AUTHORIZATION_TYPE_URL]: ['istio-system/mesh-deny'],
    });
    assert.deepEqual(workload(uid('ns2', 'a2')).authorizationPolicies, ['istio-system/mesh-deny']);

    // A namespace-wide policy is applied by scope: no workload changes.
    store.apply({ upsert: [policy('ns-wide', 'ns1')] });
    assert.deepEqual(take(), { [AUTHORIZATION_TYPE_URL]: ['ns1/ns-wide'] });

    // Moving the selector rebuilds old and new targets.
    store.apply({ upsert: [policy('deny', 'ns1', { app: 'b' })] });
    assert.deepEqual(take(), { [ADDRESS_TYPE_URL]: [uid('ns1', 'a1'), uid('ns1', 'b1')].sort() });

    store.apply({ delete: [{ kind: 'AuthorizationPolicy', namespace: 'ns1', name: 'deny' }] });
    assert.deepEqual(take(), {
      [ADDRESS_TYPE_URL]: [uid('ns1', 'b1')],
      [AUTHORIZATION_TYPE_URL]: ['ns1/deny'],
    });
    assert.equal(index.get(AUTHORIZATION_TYPE_URL, 'ns1/deny'), undefined);
    assert.deepEqual(workload(uid('ns1', 'b1')).authorizationPolicies, []);
  });

  it('sends the static STRICT policy while PeerAuthentications exist and references it from STRICT workloads', () => {
    const strict: PeerAuthentication = {
      apiVersion: 'security.istio.io/v1',
      kind: 'PeerAuthentication',
      metadata: { name: 'default', namespace: 'istio-system' },
      spec: { mtls: { mode: 'STRICT' } },
    };
    const { store, take, workload, index } = setup([
      ns('ns1'),
      ns('ns2'),
      pod('a1', 'ns1', '10.0.0.1', {}),
      pod('a2', 'ns2', '10.0.1.1', {}),
    ]);
    store.apply({ upsert: [strict] });
    assert.deepEqual(take(), {
      [ADDRESS_TYPE_URL]: [uid('ns1', 'a1'), uid('ns2', 'a2')].sort(),
      [AUTHORIZATION_TYPE_URL]: ['istio-system/istio_converted_static_strict'],
    });
    assert.deepEqual(workload(uid('ns2', 'a2')).authorizationPolicies, [
      'istio-system/istio_converted_static_strict',
    ]);
    store.apply({ delete: [{ kind: 'PeerAuthentication', namespace: 'istio-system', name: 'default' }] });
    take();
    assert.equal(index.get(AUTHORIZATION_TYPE_URL, 'istio-system/istio_converted_static_strict'), undefined);
    assert.deepEqual(workload(uid('ns1', 'a1')).authorizationPolicies, []);
  });

  it('emits nothing when a change leaves the encoded bytes unchanged', () => {
    const { store, take } = setup([
      ns('ns1'),
      pod('a1', 'ns1', '10.0.0.1', { app: 'a' }),
      service('svc', 'ns1', { app: 'a' }, '10.96.0.1'),
    ]);
    const relabelled = pod('a1', 'ns1', '10.0.0.1', { app: 'a', unrelated: 'x' });
    relabelled.metadata.resourceVersion = '2';
    store.apply({ upsert: [relabelled] });
    assert.deepEqual(take(), {});
    store.apply({
      upsert: [
        {
          ...service('svc', 'ns1', { app: 'a' }, '10.96.0.1'),
          metadata: { name: 'svc', namespace: 'ns1', annotations: { x: 'y' } },
        },
      ],
    });
    assert.deepEqual(take(), {});
  });

  it('removes resources when their objects are deleted or stop qualifying', () => {
    const { store, take, index, workload } = setup([
      ns('ns1'),
      pod('a1', 'ns1', '10.0.0.1', { app: 'a' }),
      service('svc', 'ns1', { app: 'a' }, '10.96.0.1'),
    ]);
    store.apply({ delete: [{ kind: 'Service', namespace: 'ns1', name: 'svc' }] });
    assert.deepEqual(take(), {
      [ADDRESS_TYPE_URL]: ['ns1/svc.ns1.svc.cluster.local', uid('ns1', 'a1')].sort(),
    });
    assert.equal(index.get(ADDRESS_TYPE_URL, 'ns1/svc.ns1.svc.cluster.local'), undefined);
    assert.deepEqual(workload(uid('ns1', 'a1')).services, {});

    const done = pod('a1', 'ns1', '10.0.0.1', { app: 'a' });
    done.status = { ...done.status, phase: 'Succeeded' };
    store.apply({ upsert: [done] });
    assert.deepEqual(take(), { [ADDRESS_TYPE_URL]: [uid('ns1', 'a1')] });
    assert.equal(index.get(ADDRESS_TYPE_URL, uid('ns1', 'a1')), undefined);
    assert.deepEqual([...index.names(ADDRESS_TYPE_URL)], []);
  });

  it('hands a hostname to a ServiceEntry when the Service that owned it goes, without a delete', () => {
    const se: ServiceEntry = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'shadow', namespace: 'ns1' },
      spec: {
        hosts: ['svc.ns1.svc.cluster.local'],
        addresses: ['240.240.0.9'],
        ports: [{ number: 80, name: 'http' }],
      },
    };
    const { store, take, index } = setup([ns('ns1'), service('svc', 'ns1', { app: 'a' }, '10.96.0.1'), se]);
    const name = 'ns1/svc.ns1.svc.cluster.local';
    assert.equal(index.address(name)?.name, 'svc');
    store.apply({ delete: [{ kind: 'Service', namespace: 'ns1', name: 'svc' }] });
    assert.deepEqual(take(), { [ADDRESS_TYPE_URL]: [name] });
    const now = index.address(name);
    assert.equal(now?.name, 'shadow');
    assert.ok(index.get(ADDRESS_TYPE_URL, name));
  });

  it('uses EndpointSlices only for Services without a selector', () => {
    const slice = (svcName: string, podName: string, ready: boolean): EndpointSlice => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${svcName}-x`, namespace: 'ns1', labels: { 'kubernetes.io/service-name': svcName } },
      addressType: 'IPv4',
      endpoints: [
        {
          addresses: ['10.0.0.1'],
          conditions: { ready },
          targetRef: { kind: 'Pod', name: podName, namespace: 'ns1' },
        },
      ],
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    });
    const manual: Service = {
      ...service('manual', 'ns1', {}, '10.96.0.9'),
      spec: { clusterIP: '10.96.0.9', ports: [{ name: 'http', port: 80 }] },
    };
    const { store, take, workload } = setup([
      ns('ns1'),
      pod('a1', 'ns1', '10.0.0.1', { app: 'a' }),
      service('svc', 'ns1', { app: 'a' }, '10.96.0.1'),
      manual,
    ]);
    // An ordinary Service's slice churn (a readiness flip) rebuilds no pod.
    store.apply({ upsert: [slice('svc', 'a1', true)] });
    store.apply({ upsert: [slice('svc', 'a1', false)] });
    assert.deepEqual(take(), {});
    // A selector-less Service reaches the pod through its slice.
    store.apply({ upsert: [slice('manual', 'a1', true)] });
    assert.deepEqual(take(), { [ADDRESS_TYPE_URL]: [uid('ns1', 'a1')] });
    assert.deepEqual(Object.keys(workload(uid('ns1', 'a1')).services).sort(), [
      'ns1/manual.ns1.svc.cluster.local',
      'ns1/svc.ns1.svc.cluster.local',
    ]);
    store.apply({ delete: [{ kind: 'Service', namespace: 'ns1', name: 'manual' }] });
    assert.deepEqual(Object.keys(workload(uid('ns1', 'a1')).services), ['ns1/svc.ns1.svc.cluster.local']);
  });

  it('exposes diagnostics and a JSON debug view', () => {
    const l7: AuthorizationPolicy = {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'get-only', namespace: 'ns1' },
      spec: {
        selector: { matchLabels: { app: 'a' } },
        rules: [{ to: [{ operation: { methods: ['GET'] } }] }],
      },
    };
    const { index, store } = setup([ns('ns1'), pod('a1', 'ns1', '10.0.0.1', { app: 'a' }), l7]);
    assert.deepEqual(
      index.diagnostics().map((d) => [d.kind, d.namespace, d.name, d.reason]),
      [['AuthorizationPolicy', 'ns1', 'get-only', 'UnsupportedValue']],
    );
    const view = JSON.parse(JSON.stringify(index));
    assert.deepEqual(Object.keys(view.workloads), [uid('ns1', 'a1')]);
    assert.deepEqual(Object.keys(view.policies), ['ns1/get-only']);
    assert.equal(view.diagnostics.length, 1);
    store.apply({ delete: [{ kind: 'AuthorizationPolicy', namespace: 'ns1', name: 'get-only' }] });
    assert.deepEqual(index.diagnostics(), []);
  });

  it('stops following the store after close', () => {
    const { store, index, take } = setup([ns('ns1')]);
    index.close();
    store.apply({ upsert: [pod('a1', 'ns1', '10.0.0.1', {})] });
    assert.deepEqual(take(), {});
  });

  it('scale sanity: 10k pods, 1k services, 100 policies (timings printed, not asserted)', (t) => {
    const objects: AnyObject[] = [];
    const namespaces = 20;
    for (let n = 0; n < namespaces; n++) objects.push(ns(`ns${n}`));
    for (let s = 0; s < 1000; s++) {
      const n = s % namespaces;
      objects.push(service(`svc${s}`, `ns${n}`, { app: `app${s}` }, `10.96.${s >> 8}.${s & 255}`));
    }
    for (let p = 0; p < 10_000; p++) {
      const s = p % 1000;
      objects.push(
        pod(`pod${p}`, `ns${s % namespaces}`, `10.${(p >> 16) & 255}.${(p >> 8) & 255}.${p & 255}`, {
          app: `app${s}`,
        }),
      );
    }
    for (let i = 0; i < 100; i++)
      objects.push(policy(`pol${i}`, `ns${i % namespaces}`, { app: `app${i * 10}` }));
    const store = new ConfigStore();
    store.apply({ upsert: objects });
    const t0 = performance.now();
    const index = new AmbientIndex(store, meshSettings(), quiet);
    const full = performance.now() - t0;
    assert.equal([...index.names(ADDRESS_TYPE_URL)].length, 11_000);
    assert.equal([...index.names(AUTHORIZATION_TYPE_URL)].length, 100);

    const samples: number[] = [];
    for (let i = 0; i < 50; i++) {
      const p = pod(`pod${i}`, `ns${i % namespaces}`, `10.0.0.${i}`, { app: `app${i}`, rev: `${i}` });
      p.status = { ...p.status, conditions: [{ type: 'Ready', status: i % 2 ? 'True' : 'False' }] };
      const s = performance.now();
      store.apply({ upsert: [p] });
      samples.push(performance.now() - s);
    }
    const svcStart = performance.now();
    store.apply({ upsert: [service('svc0', 'ns0', { app: 'app1' }, '10.96.0.0')] });
    const svcMs = performance.now() - svcStart;
    samples.sort((a, b) => a - b);
    t.diagnostic(
      `full build ${full.toFixed(0)} ms; single-pod update p50 ${samples[25]?.toFixed(2)} ms, p99 ${samples[49]?.toFixed(2)} ms; service selector change ${svcMs.toFixed(2)} ms`,
    );
    index.close();
  });
});
