/**
 * Kubernetes manifests for istiod's local mode, written by the mesh fixture: namespaces, pods
 * (with the node, IP and service account the harness gave them), and security policies.
 */

/** A pod as istiod's local source reads it: scheduled, running, ready. */
export interface PodManifest {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly serviceAccount: string;
  readonly node: string;
  readonly ip: string;
  /** `ambient.istio.io/redirection: enabled`, as istio-cni writes once the pod is captured. */
  readonly redirected: boolean;
  readonly labels?: Readonly<Record<string, string>>;
}

export function podYaml(p: PodManifest): string {
  const labels = { app: p.name, ...p.labels };
  return `apiVersion: v1
kind: Pod
metadata:
  name: ${p.name}
  namespace: ${p.namespace}
  uid: ${p.uid}
  labels:
${Object.entries(labels)
  .map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`)
  .join('\n')}
${p.redirected ? '  annotations:\n    ambient.istio.io/redirection: enabled\n' : ''}spec:
  nodeName: ${p.node}
  serviceAccountName: ${p.serviceAccount}
  containers:
  - name: app
    image: app
status:
  phase: Running
  podIP: ${p.ip}
  podIPs:
  - ip: ${p.ip}
  conditions:
  - type: Ready
    status: "True"
`;
}

/** A namespace; `ambient` labels it `istio.io/dataplane-mode=ambient`. */
export function namespaceYaml(name: string, ambient: boolean): string {
  return `apiVersion: v1
kind: Namespace
metadata:
  name: ${name}
${ambient ? '  labels:\n    istio.io/dataplane-mode: ambient\n' : ''}`;
}

/** One AuthorizationPolicy rule: who (`from`) may reach which ports (`to`). */
export interface PolicyRule {
  readonly principals?: readonly string[];
  readonly notPrincipals?: readonly string[];
  readonly namespaces?: readonly string[];
  readonly ports?: readonly number[];
  /** An L7 attribute ztunnel cannot enforce (spec: the ALLOW then fails closed). */
  readonly methods?: readonly string[];
}

/** An L4 AuthorizationPolicy selecting pods by `app` label (or the whole namespace). */
export function authorizationPolicyYaml(p: {
  readonly namespace: string;
  readonly name: string;
  readonly action: 'ALLOW' | 'DENY';
  readonly app?: string;
  readonly rules: readonly PolicyRule[];
  /** Annotated `istio.io/dry-run: "true"`: matched and logged by ztunnel, never enforced. */
  readonly dryRun?: boolean;
}): string {
  const rules = p.rules
    .map((r) => {
      const source: string[] = [];
      if (r.principals) source.push(`        principals: ${JSON.stringify(r.principals)}`);
      if (r.notPrincipals) source.push(`        notPrincipals: ${JSON.stringify(r.notPrincipals)}`);
      if (r.namespaces) source.push(`        namespaces: ${JSON.stringify(r.namespaces)}`);
      const from = source.length > 0 ? `    from:\n    - source:\n${source.join('\n')}\n` : '';
      const op: string[] = [];
      if (r.ports) op.push(`        ports: ${JSON.stringify(r.ports.map(String))}`);
      if (r.methods) op.push(`        methods: ${JSON.stringify(r.methods)}`);
      const to = op.length > 0 ? `    to:\n    - operation:\n${op.join('\n')}\n` : '';
      const body = `${from}${to}`;
      return body === '' ? '  - {}\n' : `  - ${body.slice(4)}`;
    })
    .join('');
  return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${p.name}
  namespace: ${p.namespace}
${p.dryRun ? '  annotations:\n    istio.io/dry-run: "true"\n' : ''}spec:
${p.app === undefined ? '' : `  selector:\n    matchLabels:\n      app: ${p.app}\n`}  action: ${p.action}
  rules:
${rules}`;
}

/** A namespace-wide PeerAuthentication. */
export function peerAuthenticationYaml(namespace: string, mode: 'STRICT' | 'PERMISSIVE'): string {
  return `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: ${namespace}
spec:
  mtls:
    mode: ${mode}
`;
}
