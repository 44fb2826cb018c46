import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The size of the generated mesh. */
export interface MeshScale {
  readonly pods: number;
  readonly services: number;
  readonly authorizationPolicies: number;
  readonly namespaces: number;
  readonly nodes: number;
  /** Pods per manifest file (a directory of a few hundred files, as a GitOps repo would have). */
  readonly podsPerFile: number;
}

export const BENCH_SCALE: MeshScale = {
  pods: 10_000,
  services: 1_000,
  authorizationPolicies: 100,
  namespaces: 20,
  nodes: 100,
  podsPerFile: 100,
};

/** Where pod `i` lives, and what its manifest says. */
export interface PodPlace {
  readonly namespace: string;
  readonly name: string;
  readonly file: string;
  /** Index of the pod within its file. */
  readonly slot: number;
}

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/** The layout every generator below shares: pods fill namespaces in order; services own 10 pods each. */
export class MeshLayout {
  readonly scale: MeshScale;
  readonly podsPerNamespace: number;
  readonly servicesPerNamespace: number;

  constructor(scale: MeshScale) {
    this.scale = scale;
    this.podsPerNamespace = Math.ceil(scale.pods / scale.namespaces);
    this.servicesPerNamespace = Math.ceil(scale.services / scale.namespaces);
  }

  namespace(n: number): string {
    return `bench-${pad(n, 2)}`;
  }

  pod(i: number): PodPlace {
    const n = Math.floor(i / this.podsPerNamespace);
    const k = i % this.podsPerNamespace;
    const chunk = Math.floor(k / this.scale.podsPerFile);
    return {
      namespace: this.namespace(n),
      name: `app-${pad(k, 4)}`,
      file: join('pods', this.namespace(n), `pods-${pad(chunk, 3)}.yaml`),
      slot: k % this.scale.podsPerFile,
    };
  }

  /** The service (within the namespace) pod `k` of a namespace belongs to. */
  serviceOf(k: number): number {
    const podsPerService = Math.max(1, Math.floor(this.podsPerNamespace / this.servicesPerNamespace));
    return Math.min(this.servicesPerNamespace - 1, Math.floor(k / podsPerService));
  }

  podYaml(i: number, version: string): string {
    const p = this.pod(i);
    const k = i % this.podsPerNamespace;
    const svc = this.serviceOf(k);
    return `apiVersion: v1
kind: Pod
metadata:
  name: ${p.name}
  namespace: ${p.namespace}
  uid: pod-uid-${i}
  labels:
    app: svc-${svc}
    version: ${version}
  annotations:
    ambient.istio.io/redirection: enabled
spec:
  nodeName: node-${pad(i % this.scale.nodes, 3)}
  serviceAccountName: sa-${svc}
  containers:
  - name: app
    image: registry.example/app:1
    ports:
    - containerPort: 8080
      name: http
status:
  phase: Running
  podIP: ${podIp(i)}
  podIPs:
  - ip: ${podIp(i)}
  conditions:
  - type: Ready
    status: "True"
`;
  }

  /** The text of the file holding pod `i`, with `versions` overriding the version label of some pods. */
  podFileYaml(file: string, versions: ReadonlyMap<number, string> = new Map()): string {
    const docs: string[] = [];
    for (const i of this.podsInFile(file)) docs.push(this.podYaml(i, versions.get(i) ?? 'v1'));
    return docs.join('---\n');
  }

  podsInFile(file: string): number[] {
    const out: number[] = [];
    const first = this.firstPodOfFile.get(file);
    if (first === undefined) return out;
    for (let i = first; i < this.scale.pods && this.pod(i).file === file; i++) out.push(i);
    return out;
  }

  readonly firstPodOfFile = new Map<string, number>();
}

function podIp(i: number): string {
  return `10.${16 + Math.floor(i / 65_536)}.${Math.floor(i / 256) % 256}.${i % 256}`;
}

function serviceIp(s: number): string {
  return `10.96.${Math.floor(s / 250)}.${(s % 250) + 1}`;
}

/**
 * Writes the mesh into `dir`: namespaces labelled for ambient, pods with the redirection
 * annotation spread over nodes and namespaces, Services selecting ten pods each,
 * AuthorizationPolicies selecting services' pods, and a mesh-wide STRICT PeerAuthentication.
 */
export async function writeMesh(dir: string, scale: MeshScale): Promise<MeshLayout> {
  const layout = new MeshLayout(scale);
  const { namespaces } = scale;
  const nsDocs: string[] = [`apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-system\n`];
  for (let n = 0; n < namespaces; n++) {
    nsDocs.push(
      `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${layout.namespace(n)}\n  labels:\n    istio.io/dataplane-mode: ambient\n`,
    );
  }
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'namespaces.yaml'), nsDocs.join('---\n'));
  await writeFile(
    join(dir, 'peer-authentication.yaml'),
    `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
`,
  );

  for (let i = 0; i < scale.pods; i++) {
    const f = layout.pod(i).file;
    if (!layout.firstPodOfFile.has(f)) layout.firstPodOfFile.set(f, i);
  }
  for (const file of layout.firstPodOfFile.keys()) {
    await mkdir(join(dir, file, '..'), { recursive: true });
    await writeFile(join(dir, file), layout.podFileYaml(file));
  }

  for (let n = 0; n < namespaces; n++) {
    const ns = layout.namespace(n);
    const docs: string[] = [];
    for (let s = 0; s < layout.servicesPerNamespace; s++) {
      const global = n * layout.servicesPerNamespace + s;
      if (global >= scale.services) break;
      docs.push(`apiVersion: v1
kind: Service
metadata:
  name: svc-${s}
  namespace: ${ns}
spec:
  clusterIP: ${serviceIp(global)}
  selector:
    app: svc-${s}
  ports:
  - name: http
    port: 80
    targetPort: 8080
`);
    }
    const policiesHere = Math.ceil(scale.authorizationPolicies / namespaces);
    for (let p = 0; p < policiesHere; p++) {
      if (n * policiesHere + p >= scale.authorizationPolicies) break;
      const target = (p * 7) % layout.servicesPerNamespace;
      const caller = (target + 1) % layout.servicesPerNamespace;
      docs.push(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-svc-${target}
  namespace: ${ns}
spec:
  selector:
    matchLabels:
      app: svc-${target}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/${ns}/sa/sa-${caller}"]
    to:
    - operation:
        ports: ["8080"]
`);
    }
    await writeFile(join(dir, `services-${ns}.yaml`), docs.join('---\n'));
  }
  return layout;
}
