import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateObject } from './validate.ts';

const meta = (name = 'x', namespace = 'default') => ({ name, namespace });

const pod = (over: Record<string, unknown> = {}) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { ...meta('web-0'), labels: { app: 'web', 'istio.io/dataplane-mode': 'ambient' } },
  spec: {
    nodeName: 'node-1',
    serviceAccountName: 'web',
    containers: [{ name: 'app', ports: [{ containerPort: 8080 }] }],
  },
  status: {
    phase: 'Running',
    podIP: '10.0.0.5',
    podIPs: [{ ip: '10.0.0.5' }, { ip: 'fd00::5' }],
    hostIP: '172.18.0.2',
  },
  ...over,
});

const service = (spec: Record<string, unknown>) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: meta('web'),
  spec,
});

const ap = (spec: Record<string, unknown>, apiVersion = 'security.istio.io/v1') => ({
  apiVersion,
  kind: 'AuthorizationPolicy',
  metadata: meta('allow'),
  spec,
});

const pa = (spec: Record<string, unknown>) => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'PeerAuthentication',
  metadata: meta('strict'),
  spec,
});

const se = (spec: Record<string, unknown>) => ({
  apiVersion: 'networking.istio.io/v1',
  kind: 'ServiceEntry',
  metadata: meta('ext'),
  spec,
});

const we = (spec: Record<string, unknown>) => ({
  apiVersion: 'networking.istio.io/v1beta1',
  kind: 'WorkloadEntry',
  metadata: meta('vm'),
  spec,
});

const gw = (spec: Record<string, unknown>) => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: meta('waypoint'),
  spec,
});

const waypointListener = { name: 'mesh', port: 15008, protocol: 'HBONE' };

const GOOD: [string, unknown][] = [
  [
    'namespace',
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'demo', labels: { 'istio.io/dataplane-mode': 'ambient' } },
    },
  ],
  ['pod', pod()],
  ['pod without status', pod({ status: undefined })],
  [
    'service with named targetPort',
    service({
      clusterIP: '10.96.0.10',
      selector: { app: 'web' },
      ports: [
        { name: 'http', port: 80, targetPort: 'http' },
        { name: 'grpc', port: 9090, targetPort: 9091 },
      ],
    }),
  ],
  ['headless service', service({ clusterIP: 'None', ports: [{ port: 80 }] })],
  [
    'endpointslice',
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { ...meta('web-abc'), labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [
        { addresses: ['10.0.0.5'], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'web-0' } },
      ],
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    },
  ],
  [
    'authorization policy v1beta1',
    ap(
      {
        selector: { matchLabels: { app: 'web' } },
        action: 'DENY',
        rules: [
          {
            from: [{ source: { namespaces: ['foo'], ipBlocks: ['10.0.0.0/8', '192.168.1.1'] } }],
            to: [{ operation: { ports: ['8080'], methods: ['GET'] } }],
            when: [{ key: 'request.headers[x]', values: ['a'] }],
          },
        ],
      },
      'security.istio.io/v1beta1',
    ),
  ],
  ['authorization policy targetRefs', ap({ targetRefs: [{ kind: 'Service', group: '', name: 'web' }] })],
  ['allow-nothing policy', ap({})],
  ['custom action', ap({ action: 'CUSTOM', provider: { name: 'ext-authz' }, rules: [{}] })],
  [
    'peer authentication',
    pa({
      selector: { matchLabels: { app: 'web' } },
      mtls: { mode: 'STRICT' },
      portLevelMtls: { '8080': { mode: 'PERMISSIVE' } },
    }),
  ],
  [
    'service entry',
    se({
      hosts: ['api.example.com'],
      addresses: ['240.240.0.1'],
      ports: [{ number: 443, name: 'https', protocol: 'TLS' }],
      resolution: 'DNS',
      location: 'MESH_EXTERNAL',
      endpoints: [{ address: 'api.example.com', ports: { https: 8443 } }],
    }),
  ],
  [
    'service entry with selector',
    se({
      hosts: ['svc.internal'],
      ports: [{ number: 80, name: 'http' }],
      workloadSelector: { labels: { app: 'vm' } },
    }),
  ],
  [
    'workload entry',
    we({ address: '10.1.0.9', labels: { app: 'vm' }, serviceAccount: 'vm', ports: { http: 8080 } }),
  ],
  ['workload entry on a network only', we({ network: 'remote' })],
  ['waypoint gateway', gw({ gatewayClassName: 'istio-waypoint', listeners: [waypointListener] })],
  [
    'gateway with allowedRoutes',
    gw({
      gatewayClassName: 'istio',
      listeners: [
        {
          name: 'http',
          port: 80,
          protocol: 'HTTP',
          allowedRoutes: { namespaces: { from: 'Selector', selector: { matchLabels: { team: 'a' } } } },
        },
      ],
    }),
  ],
  [
    'nulls are pruned',
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'n', creationTimestamp: null, labels: null },
      spec: {},
    },
  ],
];

const BAD: [string, unknown, string][] = [
  ['not an object', 'hello', 'object: must be a mapping, not string'],
  ['no kind', { apiVersion: 'v1', metadata: meta() }, 'kind: required'],
  [
    'unknown kind',
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta() },
    'kind: "ConfigMap" is not a kind istiod reads',
  ],
  [
    'wrong apiVersion',
    ap({}, 'security.istio.io/v2'),
    'apiVersion: "security.istio.io/v2" is not served for AuthorizationPolicy',
  ],
  ['no name', { apiVersion: 'v1', kind: 'Namespace', metadata: {} }, 'metadata.name: required'],
  [
    'bad name',
    { apiVersion: 'v1', kind: 'Pod', metadata: meta('Web_0') },
    'metadata.name: "Web_0" is not a valid DNS-1123 subdomain',
  ],
  [
    'service name must start with a letter',
    service({}) && { ...service({}), metadata: meta('1web') },
    'metadata.name: "1web" is not a valid DNS-1035 label',
  ],
  [
    'no namespace',
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' } },
    'metadata.namespace: required for namespaced kind Pod',
  ],
  [
    'bad namespace',
    { apiVersion: 'v1', kind: 'Pod', metadata: meta('p', 'Bad.NS') },
    'metadata.namespace: "Bad.NS" is not a valid DNS-1123 label',
  ],
  [
    'labels not a map',
    pod({ metadata: { ...meta('p'), labels: ['a'] } }),
    'metadata.labels: must be an object, not array',
  ],
  [
    'label value not a string',
    pod({ metadata: { ...meta('p'), labels: { app: 3 } } }),
    'metadata.labels.app: must be a string, not number',
  ],
  [
    'label value invalid',
    pod({ metadata: { ...meta('p'), labels: { app: 'a b' } } }),
    'metadata.labels.app: "a b" is not a valid label value',
  ],
  [
    'label key invalid',
    pod({ metadata: { ...meta('p'), labels: { 'a/b/c': 'x' } } }),
    'metadata.labels["a/b/c"]: key',
  ],
  ['top-level unknown field', { ...pod(), sepc: {} }, 'sepc: unknown field'],
  [
    'pod IP does not parse',
    pod({ status: { podIP: '10.0.0.300' } }),
    'status.podIP: "10.0.0.300" is not an IP address',
  ],
  [
    'container port out of range',
    pod({ spec: { containers: [{ name: 'a', ports: [{ containerPort: 70000 }] }] } }),
    'spec.containers[0].ports[0].containerPort: 70000 is out of range 1..65535',
  ],
  [
    'service port out of range',
    service({ ports: [{ port: 0 }] }),
    'spec.ports[0].port: 0 is out of range 1..65535',
  ],
  [
    'service port not an integer',
    service({ ports: [{ port: '80' }] }),
    'spec.ports[0].port: must be an integer, not string',
  ],
  [
    'targetPort wrong type',
    service({ ports: [{ port: 80, targetPort: true }] }),
    'spec.ports[0].targetPort: must be an integer or a string, not boolean',
  ],
  [
    'targetPort bad name',
    service({ ports: [{ port: 80, targetPort: 'HTTP_1' }] }),
    'spec.ports[0].targetPort: "HTTP_1" is not a valid port name',
  ],
  ['clusterIP does not parse', service({ clusterIP: 'ten' }), 'spec.clusterIP: "ten" is not an IP address'],
  [
    'duplicate service port names',
    service({
      ports: [
        { name: 'a', port: 1 },
        { name: 'a', port: 2 },
      ],
    }),
    'spec.ports[1].name: duplicate port name "a"',
  ],
  [
    'endpointslice address of wrong family',
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: meta('s'),
      addressType: 'IPv4',
      endpoints: [{ addresses: ['fd00::1'] }],
    },
    'endpoints[0].addresses[0]: "fd00::1" is not an IPv4 address (addressType IPv4)',
  ],
  [
    'endpointslice without addressType',
    { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: meta('s') },
    'addressType: required',
  ],
  [
    'action not in enum',
    ap({ action: 'PERMIT' }),
    'spec.action: "PERMIT" is not one of ALLOW, DENY, AUDIT, CUSTOM',
  ],
  [
    'fromm',
    ap({ rules: [{ fromm: [{ source: { namespaces: ['a'] } }] }] }),
    'spec.rules[0].fromm: unknown field',
  ],
  ['spec unknown field', ap({ actions: 'ALLOW' }), 'spec.actions: unknown field'],
  ['rules not a list', ap({ rules: { from: [] } }), 'spec.rules: must be an array, not object'],
  ['source missing', ap({ rules: [{ from: [{}] }] }), 'spec.rules[0].from[0].source: required'],
  [
    'source empty',
    ap({ rules: [{ from: [{ source: {} }] }] }),
    'spec.rules[0].from[0].source: must not be empty',
  ],
  [
    'ipBlock does not parse',
    ap({ rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/33'] } }] }] }),
    'spec.rules[0].from[0].source.ipBlocks[0]: "10.0.0.0/33" is not a CIDR prefix',
  ],
  [
    'port not numeric',
    ap({ rules: [{ to: [{ operation: { ports: ['http'] } }] }] }),
    'spec.rules[0].to[0].operation.ports[0]: "http" is not a port number',
  ],
  [
    'selector and targetRefs',
    ap({ selector: { matchLabels: { a: 'b' } }, targetRefs: [{ kind: 'Service', name: 'x' }] }),
    'spec.targetRefs: only one of targetRefs or selector can be set',
  ],
  [
    'selector with matchExpressions',
    ap({ selector: { matchExpressions: [] } }),
    'spec.selector.matchExpressions: unknown field',
  ],
  [
    'wildcard in selector',
    ap({ selector: { matchLabels: { app: 'web*' } } }),
    'spec.selector.matchLabels.app: wildcard not allowed in label value match',
  ],
  [
    'cross-namespace targetRef',
    ap({ targetRef: { kind: 'Gateway', name: 'w', namespace: 'other' } }),
    'spec.targetRef.namespace: cross namespace referencing is not currently supported',
  ],
  [
    'serviceAccounts with namespaces',
    ap({ rules: [{ from: [{ source: { serviceAccounts: ['a'], namespaces: ['b'] } }] }] }),
    'spec.rules[0].from[0].source.namespaces: cannot set serviceAccounts with namespaces or principals',
  ],
  ['CUSTOM without provider', ap({ action: 'CUSTOM' }), 'spec.provider: required for action CUSTOM'],
  [
    'condition without values',
    ap({ rules: [{ when: [{ key: 'source.ip' }] }] }),
    'spec.rules[0].when[0]: condition "source.ip" needs values or notValues',
  ],
  [
    'mtls mode not in enum',
    pa({ mtls: { mode: 'ON' } }),
    'spec.mtls.mode: "ON" is not one of UNSET, DISABLE, PERMISSIVE, STRICT',
  ],
  [
    'port key not numeric',
    pa({ selector: { matchLabels: { a: 'b' } }, portLevelMtls: { http: { mode: 'STRICT' } } }),
    'spec.portLevelMtls.http: key "http" is not a port number',
  ],
  [
    'portLevelMtls without selector',
    pa({ portLevelMtls: { '80': { mode: 'STRICT' } } }),
    'spec.portLevelMtls: portLevelMtls requires a selector with matchLabels',
  ],
  ['service entry without hosts', se({ ports: [{ number: 80, name: 'http' }] }), 'spec.hosts: required'],
  ['service entry empty hosts', se({ hosts: [] }), 'spec.hosts: must have at least one item'],
  ['service entry wildcard host', se({ hosts: ['*'] }), 'spec.hosts[0]: hostname cannot be wildcard'],
  [
    'service entry port without name',
    se({ hosts: ['a.b'], ports: [{ number: 80 }] }),
    'spec.ports[0].name: required',
  ],
  [
    'service entry duplicate port',
    se({
      hosts: ['a.b'],
      ports: [
        { number: 80, name: 'a' },
        { number: 80, name: 'b' },
      ],
    }),
    'spec.ports[1].number: port number 80 cannot be duplicated',
  ],
  [
    'service entry CIDR with DNS',
    se({ hosts: ['a.b'], addresses: ['10.0.0.0/24'], resolution: 'DNS' }),
    'spec.addresses[0]: CIDR addresses are allowed only for NONE/STATIC resolution, not DNS',
  ],
  [
    'service entry NONE with endpoints',
    se({ hosts: ['a.b'], endpoints: [{ address: '1.2.3.4' }] }),
    'spec.endpoints: resolution NONE cannot set endpoints',
  ],
  [
    'service entry endpoints and selector',
    se({
      hosts: ['a.b'],
      resolution: 'STATIC',
      endpoints: [{ address: '1.2.3.4' }],
      workloadSelector: { labels: {} },
    }),
    'spec.endpoints: only one of workloadSelector or endpoints can be set',
  ],
  [
    'service entry bad address',
    se({ hosts: ['a.b'], addresses: ['1.2.3'] }),
    'spec.addresses[0]: "1.2.3" is not an IP address or CIDR prefix',
  ],
  ['workload entry without address', we({ labels: { a: 'b' } }), 'spec.address: address is required'],
  [
    'workload entry port out of range',
    we({ address: '1.2.3.4', ports: { http: 65536 } }),
    'spec.ports.http: 65536 is out of range 1..65535',
  ],
  [
    'workload entry UDS with ports',
    we({ address: 'unix:///var/run/x.sock', ports: { http: 80 } }),
    'spec.ports: UDS may not include ports',
  ],
  ['gateway without listeners', gw({ gatewayClassName: 'istio' }), 'spec.listeners: required'],
  [
    'gateway empty listeners',
    gw({ gatewayClassName: 'istio', listeners: [] }),
    'spec.listeners: must have at least one item',
  ],
  [
    'listener port out of range',
    gw({ gatewayClassName: 'istio', listeners: [{ ...waypointListener, port: 0 }] }),
    'spec.listeners[0].port: 0 is out of range 1..65535',
  ],
  [
    'listener without protocol',
    gw({ gatewayClassName: 'istio', listeners: [{ name: 'a', port: 1 }] }),
    'spec.listeners[0].protocol: required',
  ],
  [
    'duplicate listener names',
    gw({ gatewayClassName: 'istio', listeners: [waypointListener, { ...waypointListener, port: 15009 }] }),
    'spec.listeners[1].name: listener name "mesh" cannot be duplicated',
  ],
  [
    'listener unknown field',
    gw({ gatewayClassName: 'istio', listeners: [{ ...waypointListener, ports: 1 }] }),
    'spec.listeners[0].ports: unknown field',
  ],
  [
    'allowedRoutes from not in enum',
    gw({
      gatewayClassName: 'istio',
      listeners: [{ ...waypointListener, allowedRoutes: { namespaces: { from: 'Any' } } }],
    }),
    'spec.listeners[0].allowedRoutes.namespaces.from: "Any" is not one of All, Same, Selector, None',
  ],
];

describe('validateObject', () => {
  for (const [name, raw] of GOOD) {
    it(`accepts ${name}`, () => {
      const r = validateObject(raw);
      assert.equal(r.ok, true, r.ok ? '' : r.reason);
    });
  }

  for (const [name, raw, reason] of BAD) {
    it(`rejects ${name}`, () => {
      const r = validateObject(raw);
      assert.equal(r.ok, false, `${name} was accepted`);
      if (!r.ok)
        assert.ok(
          r.reason.startsWith(reason),
          `reason ${JSON.stringify(r.reason)} does not start with ${JSON.stringify(reason)}`,
        );
    });
  }

  it('names the rejected object and a stable code', () => {
    const r = validateObject(ap({ rules: [{ fromm: [] }] }));
    assert.deepEqual(r.ok ? undefined : { ref: r.ref, code: r.code }, {
      ref: { kind: 'AuthorizationPolicy', namespace: 'default', name: 'allow' },
      code: 'unknown_field',
    });
  });

  it('normalises apiVersion to the storage version and prunes nulls and managedFields', () => {
    const r = validateObject({
      ...ap({ action: 'ALLOW', selector: null }, 'security.istio.io/v1beta1'),
      metadata: { ...meta('allow'), managedFields: [{ manager: 'kubectl' }], labels: null },
    });
    assert.ok(r.ok);
    assert.equal(r.object.apiVersion, 'security.istio.io/v1');
    assert.deepEqual(r.object.metadata, { name: 'allow', namespace: 'default' });
    assert.deepEqual((r.object as { spec: unknown }).spec, { action: 'ALLOW' });
  });

  it('applies the default namespace to namespaced kinds only', () => {
    const p = validateObject(
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' } },
      { defaultNamespace: 'default' },
    );
    assert.ok(p.ok);
    assert.equal(p.object.metadata.namespace, 'default');
    const n = validateObject(
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'n', namespace: 'x' } },
      { defaultNamespace: 'default' },
    );
    assert.ok(n.ok);
    assert.equal(n.object.metadata.namespace, undefined);
  });

  it('does not modify its input', () => {
    const raw = ap({ action: 'ALLOW' }, 'security.istio.io/v1beta1');
    const copy = structuredClone(raw);
    validateObject(raw);
    assert.deepEqual(raw, copy);
  });
});
