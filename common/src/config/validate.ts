/**
 * Validates one raw object from a source (an API server event or a manifest document) before it
 * reaches the ConfigStore. The checks are the ones istiod's readers rely on: a known kind at an
 * accepted apiVersion, a well-formed name and namespace, and the types and ranges of the fields
 * the ambient index reads. Istio and Gateway API specs are checked strictly, as their structural
 * CRD schemas are under kubectl's strict field validation, so a typo such as `fromm` is refused
 * instead of silently widening a policy. Built-in kinds are checked only for the fields read here:
 * the API server already validated the rest.
 */

import {
  dns1035Label,
  dns1123Label,
  dns1123Subdomain,
  ianaSvcName,
  ipAddress,
  ipOrCidr,
  ipv4Address,
  ipv6Address,
  labelValue,
  portString,
  qualifiedName,
} from './formats.ts';
import { ACCEPTED_API_VERSIONS, apiVersionOf, isKind, KINDS, type Kind } from './kinds.ts';
import type { AnyObject } from './objects.ts';
import {
  anyObject,
  anything,
  arr,
  bool,
  type Check,
  childPath,
  has,
  int,
  intOrString,
  isPlainObject,
  obj,
  oneOf,
  type Problem,
  type ProblemCode,
  port,
  problem,
  record,
  str,
} from './schema.ts';
import type { ObjectRef } from './store.ts';

/** Why an object was refused: the rejection counter's `reason_code` label. */
export type RejectionCode =
  | ProblemCode
  | 'not_an_object'
  | 'unknown_kind'
  | 'unsupported_api_version'
  | 'invalid_name'
  | 'missing_namespace';

export type ValidationResult =
  | { readonly ok: true; readonly object: AnyObject }
  | { readonly ok: false; readonly ref: ObjectRef; readonly reason: string; readonly code: RejectionCode };

export interface ValidateOptions {
  /**
   * The namespace given to namespaced objects that name none, as `kubectl apply` does with the
   * current context's namespace. Without it such an object is refused (an API server always
   * sets the namespace, so one missing there is a malformed object).
   */
  readonly defaultNamespace?: string;
}

// ---------------------------------------------------------------------------------------------
// Shared field shapes

const labelMap: Check = record(str({ rule: labelValue }), { key: qualifiedName });
const stringMap: Check = record(str());
const stringList: Check = arr(str());
const protocol: Check = oneOf(['TCP', 'UDP', 'SCTP']);

const metadata: Check = obj(
  {
    name: str(),
    namespace: str({ rule: dns1123Label }),
    uid: str(),
    resourceVersion: str(),
    generation: int({ min: 0 }),
    labels: labelMap,
    annotations: record(str(), { key: qualifiedName }),
    deletionTimestamp: str(),
    creationTimestamp: str(),
    ownerReferences: arr(
      obj(
        {
          apiVersion: str(),
          kind: str(),
          name: str(),
          uid: str(),
          controller: bool(),
          blockOwnerDeletion: bool(),
        },
        { required: ['apiVersion', 'kind', 'name', 'uid'] },
      ),
    ),
  },
  { required: ['name'] },
);

/** Kubernetes' metav1.LabelSelector (Service-side and Gateway API selectors). */
const kubeLabelSelector: Check = obj(
  {
    matchLabels: labelMap,
    matchExpressions: arr(
      obj(
        {
          key: str({ rule: qualifiedName }),
          operator: oneOf(['In', 'NotIn', 'Exists', 'DoesNotExist']),
          values: stringList,
        },
        {
          strict: true,
          required: ['key', 'operator'],
          rules: [
            (e, path) => {
              const values = Array.isArray(e.values) ? e.values.length : 0;
              const needsValues = e.operator === 'In' || e.operator === 'NotIn';
              if (needsValues && values === 0) {
                return problem(
                  childPath(path, 'values'),
                  'missing_field',
                  `required for operator ${e.operator}`,
                );
              }
              if (!needsValues && values > 0) {
                return problem(
                  childPath(path, 'values'),
                  'conflict',
                  `must be empty for operator ${e.operator}`,
                );
              }
              return undefined;
            },
          ],
        },
      ),
    ),
  },
  { strict: true },
);

/** Istio's WorkloadSelector: `matchLabels` only, no wildcards, no empty keys. */
const istioSelectorLabels: Check = record(
  str({
    maxLength: 63,
    rule: (s) => (s.includes('*') ? 'wildcard not allowed in label value match' : undefined),
  }),
  {
    key: (k) =>
      k.length === 0
        ? 'must not be empty'
        : k.includes('*')
          ? 'wildcard not allowed in label key match'
          : undefined,
    maxProperties: 4096,
  },
);
const workloadSelector: Check = obj({ matchLabels: istioSelectorLabels }, { strict: true });

const GROUP_PATTERN = /^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const KIND_PATTERN = /^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$/;

const policyTargetRef: Check = obj(
  {
    group: str({
      maxLength: 253,
      rule: (s) => (GROUP_PATTERN.test(s) ? undefined : `${JSON.stringify(s)} is not a valid API group`),
    }),
    kind: str({
      minLength: 1,
      maxLength: 63,
      rule: (s) => (KIND_PATTERN.test(s) ? undefined : `${JSON.stringify(s)} is not a valid kind`),
    }),
    name: str({ minLength: 1, maxLength: 253 }),
    namespace: str({
      rule: (s) => (s.length === 0 ? undefined : 'cross namespace referencing is not currently supported'),
    }),
  },
  { strict: true, required: ['kind', 'name'] },
);

/** At most one of the listed fields may be set (the CRDs' "only one of" rules). */
function atMostOne(fields: readonly string[], message: string) {
  return (o: Record<string, unknown>, path: string): Problem | undefined => {
    const set = fields.filter((f) => has(o, f));
    return set.length > 1 ? problem(childPath(path, set[1] as string), 'conflict', message) : undefined;
  };
}

function nonEmptyObject(o: Record<string, unknown>): boolean {
  return Object.values(o).some((v) => v !== undefined && v !== null);
}

// ---------------------------------------------------------------------------------------------
// Built-in kinds: only what istiod reads, not strict

const containerPort: Check = obj(
  { name: str({ rule: ianaSvcName }), containerPort: port, protocol },
  { required: ['containerPort'] },
);

const podSpec: Check = obj({
  nodeName: str(),
  serviceAccountName: str(),
  hostNetwork: bool(),
  containers: arr(obj({ name: str(), ports: arr(containerPort) }, { required: ['name'] })),
  initContainers: arr(obj({ name: str(), ports: arr(containerPort) }, { required: ['name'] })),
});

const podStatus: Check = obj({
  phase: oneOf(['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown']),
  podIP: str({ rule: ipAddress }),
  podIPs: arr(obj({ ip: str({ rule: ipAddress }) }, { required: ['ip'] })),
  hostIP: str({ rule: ipAddress }),
  hostIPs: arr(obj({ ip: str({ rule: ipAddress }) }, { required: ['ip'] })),
  conditions: arr(
    obj({ type: str(), status: oneOf(['True', 'False', 'Unknown']) }, { required: ['type', 'status'] }),
  ),
});

const clusterIp: StringRuleCheck = (s) => (s === '' || s === 'None' ? undefined : ipAddress(s));
type StringRuleCheck = (s: string) => string | undefined;

const servicePort: Check = obj(
  {
    name: str(),
    port,
    targetPort: intOrString(port, str({ rule: ianaSvcName })),
    protocol,
    appProtocol: str(),
    nodePort: int({ min: 0, max: 65535 }),
  },
  { required: ['port'] },
);

const serviceSpec: Check = obj({
  type: oneOf(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']),
  clusterIP: str({ rule: clusterIp }),
  clusterIPs: arr(str({ rule: clusterIp })),
  selector: record(str({ rule: labelValue }), { key: qualifiedName }),
  ports: arr(servicePort, {
    rule: (ports, path) => {
      if (ports.length < 2) return undefined;
      const seen = new Set<string>();
      for (let i = 0; i < ports.length; i++) {
        const p = ports[i] as Record<string, unknown>;
        if (typeof p.name !== 'string' || p.name === '') {
          return problem(
            childPath(childPath(path, i), 'name'),
            'missing_field',
            'required when a Service has more than one port',
          );
        }
        if (seen.has(p.name))
          return problem(
            childPath(childPath(path, i), 'name'),
            'conflict',
            `duplicate port name ${JSON.stringify(p.name)}`,
          );
        seen.add(p.name);
      }
      return undefined;
    },
  }),
  publishNotReadyAddresses: bool(),
  trafficDistribution: str(),
  ipFamilies: arr(oneOf(['IPv4', 'IPv6'])),
  externalName: str(),
});

const endpointSliceEndpoint: Check = obj(
  {
    addresses: arr(str(), { minItems: 1 }),
    conditions: obj({ ready: bool(), serving: bool(), terminating: bool() }),
    targetRef: obj({ kind: str(), name: str(), namespace: str(), uid: str() }),
    nodeName: str(),
    zone: str(),
    hostname: str(),
  },
  { required: ['addresses'] },
);

const ADDRESS_RULES: Readonly<Record<string, StringRuleCheck>> = {
  IPv4: ipv4Address,
  IPv6: ipv6Address,
  FQDN: dns1123Subdomain,
};

const endpointSliceAddresses = (o: Record<string, unknown>, path: string): Problem | undefined => {
  const rule = ADDRESS_RULES[o.addressType as string];
  if (!rule || !Array.isArray(o.endpoints)) return undefined;
  for (let i = 0; i < o.endpoints.length; i++) {
    const addresses = (o.endpoints[i] as { addresses: string[] }).addresses;
    for (let j = 0; j < addresses.length; j++) {
      const msg = rule(addresses[j] as string);
      if (msg !== undefined) {
        return problem(
          childPath(childPath(childPath(childPath(path, 'endpoints'), i), 'addresses'), j),
          'invalid_value',
          `${msg} (addressType ${o.addressType as string})`,
        );
      }
    }
  }
  return undefined;
};

// ---------------------------------------------------------------------------------------------
// Istio CRDs: strict, as their structural schemas

const authorizationSource: Check = obj(
  {
    principals: stringList,
    notPrincipals: stringList,
    requestPrincipals: stringList,
    notRequestPrincipals: stringList,
    namespaces: stringList,
    notNamespaces: stringList,
    serviceAccounts: arr(str({ maxLength: 320 }), { maxItems: 16 }),
    notServiceAccounts: arr(str({ maxLength: 320 }), { maxItems: 16 }),
    ipBlocks: arr(str({ rule: ipOrCidr })),
    notIpBlocks: arr(str({ rule: ipOrCidr })),
    remoteIpBlocks: arr(str({ rule: ipOrCidr })),
    notRemoteIpBlocks: arr(str({ rule: ipOrCidr })),
  },
  {
    strict: true,
    rules: [
      (s, path) => {
        if (!has(s, 'serviceAccounts') && !has(s, 'notServiceAccounts')) return undefined;
        const clash = ['principals', 'notPrincipals', 'namespaces', 'notNamespaces'].find((f) => has(s, f));
        return clash
          ? problem(
              childPath(path, clash),
              'conflict',
              'cannot set serviceAccounts with namespaces or principals',
            )
          : undefined;
      },
      (s, path) => (nonEmptyObject(s) ? undefined : problem(path, 'missing_field', 'must not be empty')),
    ],
  },
);

const authorizationOperation: Check = obj(
  {
    hosts: stringList,
    notHosts: stringList,
    ports: arr(str({ rule: portString })),
    notPorts: arr(str({ rule: portString })),
    methods: stringList,
    notMethods: stringList,
    paths: stringList,
    notPaths: stringList,
  },
  {
    strict: true,
    rules: [
      (o, path) => (nonEmptyObject(o) ? undefined : problem(path, 'missing_field', 'must not be empty')),
    ],
  },
);

const authorizationRule: Check = obj(
  {
    from: arr(obj({ source: authorizationSource }, { strict: true, required: ['source'] }), {
      maxItems: 512,
    }),
    to: arr(obj({ operation: authorizationOperation }, { strict: true, required: ['operation'] })),
    when: arr(
      obj(
        { key: str({ minLength: 1 }), values: stringList, notValues: stringList },
        {
          strict: true,
          required: ['key'],
          rules: [
            (c, path) =>
              (Array.isArray(c.values) && c.values.length > 0) ||
              (Array.isArray(c.notValues) && c.notValues.length > 0)
                ? undefined
                : problem(
                    path,
                    'missing_field',
                    `condition ${JSON.stringify(c.key)} needs values or notValues`,
                  ),
          ],
        },
      ),
    ),
  },
  { strict: true },
);

const authorizationPolicySpec: Check = obj(
  {
    selector: workloadSelector,
    targetRef: policyTargetRef,
    targetRefs: arr(policyTargetRef, { maxItems: 16 }),
    action: oneOf(['ALLOW', 'DENY', 'AUDIT', 'CUSTOM']),
    provider: obj({ name: str() }, { strict: true }),
    rules: arr(authorizationRule, { maxItems: 512 }),
  },
  {
    strict: true,
    rules: [
      atMostOne(['selector', 'targetRef', 'targetRefs'], 'only one of targetRefs or selector can be set'),
      (s, path) => {
        // istiod's admission webhook: CUSTOM names its extension provider, nothing else has one.
        if (s.action === 'CUSTOM' && !has(s, 'provider')) {
          return problem(childPath(path, 'provider'), 'missing_field', 'required for action CUSTOM');
        }
        if (s.action !== 'CUSTOM' && has(s, 'provider')) {
          return problem(childPath(path, 'provider'), 'conflict', 'may only be set for action CUSTOM');
        }
        return undefined;
      },
    ],
  },
);

const mtlsMode: Check = oneOf(['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT']);

const peerAuthenticationSpec: Check = obj(
  {
    selector: workloadSelector,
    mtls: obj({ mode: mtlsMode }, { strict: true }),
    portLevelMtls: record(obj({ mode: mtlsMode }, { strict: true }), { key: portString, minProperties: 1 }),
  },
  {
    strict: true,
    rules: [
      (s, path) => {
        if (!has(s, 'portLevelMtls')) return undefined;
        const sel = s.selector as { matchLabels?: Record<string, string> } | undefined;
        return Object.keys(sel?.matchLabels ?? {}).length > 0
          ? undefined
          : problem(
              childPath(path, 'portLevelMtls'),
              'conflict',
              'portLevelMtls requires a selector with matchLabels',
            );
      },
    ],
  },
);

const PORT_NAME = /^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$/;

const UNIX_PREFIX = 'unix://';

const workloadEntryFields: Readonly<Record<string, Check>> = {
  address: str({
    maxLength: 256,
    rule: (s) => {
      if (!s.startsWith(UNIX_PREFIX)) return undefined;
      const rest = s.slice(UNIX_PREFIX.length);
      if (!rest.startsWith('/') && !rest.startsWith('@'))
        return 'UDS must be an absolute path or abstract socket';
      return s.endsWith('/') ? 'UDS may not be a dir' : undefined;
    },
  }),
  ports: record(port, {
    key: (k) =>
      k.length < 63 && PORT_NAME.test(k) ? undefined : `${JSON.stringify(k)} is not a valid port name`,
    maxProperties: 128,
  }),
  labels: record(str(), { maxProperties: 256 }),
  network: str({ maxLength: 2048 }),
  locality: str({ maxLength: 2048 }),
  weight: int({ min: 0, max: 4294967295 }),
  serviceAccount: str({ maxLength: 253 }),
};

const workloadEntryRules = [
  (w: Record<string, unknown>, path: string): Problem | undefined =>
    has(w, 'address') || has(w, 'network')
      ? undefined
      : problem(childPath(path, 'address'), 'missing_field', 'address is required'),
  (w: Record<string, unknown>, path: string): Problem | undefined =>
    typeof w.address === 'string' && w.address.startsWith(UNIX_PREFIX) && has(w, 'ports')
      ? problem(childPath(path, 'ports'), 'conflict', 'UDS may not include ports')
      : undefined,
];

const workloadEntrySpec: Check = obj(workloadEntryFields, { strict: true, rules: workloadEntryRules });

const serviceEntryPort: Check = obj(
  { number: port, protocol: str({ maxLength: 256 }), name: str({ maxLength: 256 }), targetPort: port },
  { strict: true, required: ['number', 'name'] },
);

function uniqueBy(field: string, what: string) {
  return (items: readonly unknown[], path: string): Problem | undefined => {
    const seen = new Set<unknown>();
    for (let i = 0; i < items.length; i++) {
      const v = (items[i] as Record<string, unknown>)[field];
      if (seen.has(v))
        return problem(
          childPath(childPath(path, i), field),
          'conflict',
          `${what} ${JSON.stringify(v)} cannot be duplicated`,
        );
      seen.add(v);
    }
    return undefined;
  };
}

const serviceEntrySpec: Check = obj(
  {
    hosts: arr(str({ minLength: 1, rule: (s) => (s === '*' ? 'hostname cannot be wildcard' : undefined) }), {
      minItems: 1,
      maxItems: 256,
    }),
    addresses: arr(str({ maxLength: 64, rule: ipOrCidr }), { maxItems: 256 }),
    ports: arr(serviceEntryPort, {
      maxItems: 256,
      rule: (ports, path) =>
        uniqueBy('number', 'port number')(ports, path) ?? uniqueBy('name', 'port name')(ports, path),
    }),
    location: oneOf(['MESH_EXTERNAL', 'MESH_INTERNAL']),
    resolution: oneOf(['NONE', 'STATIC', 'DNS', 'DNS_ROUND_ROBIN']),
    endpoints: arr(workloadEntrySpec, { maxItems: 4096 }),
    workloadSelector: obj(
      {
        labels: record(
          str({
            maxLength: 63,
            rule: (s) => (s.includes('*') ? 'wildcard is not supported in selector' : undefined),
          }),
          { maxProperties: 256 },
        ),
      },
      { strict: true },
    ),
    exportTo: stringList,
    subjectAltNames: stringList,
  },
  {
    strict: true,
    required: ['hosts'],
    rules: [
      atMostOne(['workloadSelector', 'endpoints'], 'only one of workloadSelector or endpoints can be set'),
      (s, path) => {
        const resolution = typeof s.resolution === 'string' ? s.resolution : 'NONE';
        const addresses = Array.isArray(s.addresses) ? (s.addresses as string[]) : [];
        const i = addresses.findIndex((a) => a.includes('/'));
        if (i !== -1 && resolution !== 'NONE' && resolution !== 'STATIC') {
          return problem(
            childPath(childPath(path, 'addresses'), i),
            'conflict',
            `CIDR addresses are allowed only for NONE/STATIC resolution, not ${resolution}`,
          );
        }
        if (resolution === 'NONE' && has(s, 'endpoints')) {
          return problem(childPath(path, 'endpoints'), 'conflict', 'resolution NONE cannot set endpoints');
        }
        if (resolution === 'DNS_ROUND_ROBIN' && Array.isArray(s.endpoints) && s.endpoints.length > 1) {
          return problem(
            childPath(path, 'endpoints'),
            'conflict',
            'resolution DNS_ROUND_ROBIN cannot have multiple endpoints',
          );
        }
        return undefined;
      },
    ],
  },
);

// ---------------------------------------------------------------------------------------------
// Gateway API Gateway

const SECTION_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const GATEWAY_PROTOCOL =
  /^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9]+$/;

const listener: Check = obj(
  {
    name: str({
      minLength: 1,
      maxLength: 253,
      rule: (s) => (SECTION_NAME.test(s) ? undefined : `${JSON.stringify(s)} is not a valid listener name`),
    }),
    hostname: str({ minLength: 1, maxLength: 253 }),
    port,
    protocol: str({
      minLength: 1,
      maxLength: 255,
      rule: (s) => (GATEWAY_PROTOCOL.test(s) ? undefined : `${JSON.stringify(s)} is not a valid protocol`),
    }),
    tls: anyObject,
    allowedRoutes: obj(
      {
        namespaces: obj(
          { from: oneOf(['All', 'Same', 'Selector', 'None']), selector: kubeLabelSelector },
          { strict: true },
        ),
        kinds: arr(obj({ group: str(), kind: str({ minLength: 1 }) }, { strict: true, required: ['kind'] }), {
          maxItems: 8,
        }),
      },
      { strict: true },
    ),
  },
  { strict: true, required: ['name', 'port', 'protocol'] },
);

const gatewaySpec: Check = obj(
  {
    gatewayClassName: str({ minLength: 1, maxLength: 253 }),
    listeners: arr(listener, { minItems: 1, maxItems: 64, rule: uniqueBy('name', 'listener name') }),
    addresses: arr(
      obj(
        { type: str(), value: str({ minLength: 1, maxLength: 253 }) },
        { strict: true, required: ['value'] },
      ),
      {
        maxItems: 16,
      },
    ),
    infrastructure: obj(
      { labels: stringMap, annotations: stringMap, parametersRef: anyObject },
      { strict: true },
    ),
    // Newer Gateway API fields istiod does not read; accepted so a current CRD's objects pass.
    allowedListeners: anyObject,
    backendTLS: anyObject,
    tls: anyObject,
    defaultScope: str(),
  },
  { strict: true, required: ['gatewayClassName', 'listeners'] },
);

const gatewayStatus: Check = obj({
  addresses: arr(obj({ type: str(), value: str() }, { required: ['value'] })),
});

// ---------------------------------------------------------------------------------------------
// Per kind

interface KindRules {
  /** The top-level fields besides apiVersion, kind and metadata. */
  readonly fields: Readonly<Record<string, Check>>;
  readonly required?: readonly string[];
  readonly rules?: readonly ((o: Record<string, unknown>, path: string) => Problem | undefined)[];
  readonly name: StringRuleCheck;
}

const STATUS_ANY = { status: anything };

const KIND_RULES: Readonly<Record<Kind, KindRules>> = {
  Namespace: { fields: { spec: anyObject, ...STATUS_ANY }, name: dns1123Label },
  Pod: { fields: { spec: podSpec, status: podStatus }, name: dns1123Subdomain },
  Service: { fields: { spec: serviceSpec, ...STATUS_ANY }, name: dns1035Label },
  EndpointSlice: {
    fields: {
      addressType: oneOf(['IPv4', 'IPv6', 'FQDN']),
      endpoints: arr(endpointSliceEndpoint, { maxItems: 1000 }),
      ports: arr(obj({ name: str(), port: int({ min: 0, max: 65535 }), protocol, appProtocol: str() })),
    },
    required: ['addressType'],
    rules: [endpointSliceAddresses],
    name: dns1123Subdomain,
  },
  AuthorizationPolicy: { fields: { spec: authorizationPolicySpec, ...STATUS_ANY }, name: dns1123Subdomain },
  PeerAuthentication: { fields: { spec: peerAuthenticationSpec, ...STATUS_ANY }, name: dns1123Subdomain },
  ServiceEntry: {
    fields: { spec: serviceEntrySpec, ...STATUS_ANY },
    required: ['spec'],
    name: dns1123Subdomain,
  },
  WorkloadEntry: {
    fields: { spec: workloadEntrySpec, ...STATUS_ANY },
    required: ['spec'],
    name: dns1123Subdomain,
  },
  Gateway: {
    fields: { spec: gatewaySpec, status: gatewayStatus },
    required: ['spec'],
    name: dns1123Subdomain,
  },
};

const KIND_CHECKS: Readonly<Record<Kind, Check>> = Object.fromEntries(
  (Object.keys(KIND_RULES) as Kind[]).map((kind) => {
    const r = KIND_RULES[kind];
    return [
      kind,
      obj(
        { apiVersion: str(), kind: str(), metadata, ...r.fields },
        { strict: true, required: ['metadata', ...(r.required ?? [])], rules: r.rules ?? [] },
      ),
    ];
  }),
) as Record<Kind, Check>;

// ---------------------------------------------------------------------------------------------

/** The reference a rejection is filed under, taken from whatever the raw object carries. */
function refOf(raw: Record<string, unknown>, defaultNamespace: string | undefined): ObjectRef {
  const meta = isPlainObject(raw.metadata) ? raw.metadata : {};
  const kind = typeof raw.kind === 'string' ? raw.kind : '';
  const clusterScoped = isKind(kind) && !KINDS[kind].namespaced;
  const ns = typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : defaultNamespace;
  return {
    kind,
    namespace: clusterScoped ? '' : (ns ?? ''),
    name: typeof meta.name === 'string' ? meta.name : '',
  };
}

function fail(ref: ObjectRef, code: RejectionCode, reason: string): ValidationResult {
  return { ok: false, ref, code, reason };
}

/**
 * A deep copy without `null` fields (pruned as the API server prunes them) and without
 * `metadata.managedFields`, which istiod never reads and which can be most of an object's bytes.
 */
function normalized(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(normalized);
  if (!isPlainObject(v)) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (x !== null && x !== undefined) out[k] = normalized(x);
  }
  return out;
}

/**
 * Validates a raw object. On success returns a normalised copy: apiVersion set to the kind's
 * storage version, the default namespace applied, a cluster-scoped kind's namespace dropped,
 * nulls and managedFields removed. On failure names the object (as far as it can be named), a
 * stable code, and a reason that starts with the field path.
 */
export function validateObject(raw: unknown, options: ValidateOptions = {}): ValidationResult {
  if (!isPlainObject(raw)) {
    return fail(
      { kind: '', namespace: '', name: '' },
      'not_an_object',
      `object: must be a mapping, not ${raw === null ? 'null' : Array.isArray(raw) ? 'a list' : typeof raw}`,
    );
  }
  const ref = refOf(raw, options.defaultNamespace);
  const kind = raw.kind;
  if (typeof kind !== 'string' || kind === '') return fail(ref, 'missing_field', 'kind: required');
  if (!isKind(kind))
    return fail(ref, 'unknown_kind', `kind: ${JSON.stringify(kind)} is not a kind istiod reads`);
  const accepted = ACCEPTED_API_VERSIONS[kind];
  if (typeof raw.apiVersion !== 'string' || raw.apiVersion === '')
    return fail(ref, 'missing_field', 'apiVersion: required');
  if (!accepted.includes(raw.apiVersion)) {
    return fail(
      ref,
      'unsupported_api_version',
      `apiVersion: ${JSON.stringify(raw.apiVersion)} is not served for ${kind} (accepted: ${accepted.join(', ')})`,
    );
  }
  const p = KIND_CHECKS[kind](raw, '');
  if (p) return fail(ref, p.code, `${p.path}: ${p.message}`);

  const meta = raw.metadata as Record<string, unknown>;
  const nameProblem = KIND_RULES[kind].name(meta.name as string);
  if (nameProblem !== undefined) return fail(ref, 'invalid_name', `metadata.name: ${nameProblem}`);
  const namespaced = KINDS[kind].namespaced;
  if (namespaced && ref.namespace === '') {
    return fail(ref, 'missing_namespace', `metadata.namespace: required for namespaced kind ${kind}`);
  }

  const object = normalized(raw) as Record<string, unknown> & { metadata: Record<string, unknown> };
  delete object.metadata.managedFields;
  object.apiVersion = apiVersionOf(kind);
  if (namespaced) object.metadata.namespace = ref.namespace;
  else delete object.metadata.namespace;
  return { ok: true, object: object as unknown as AnyObject };
}
