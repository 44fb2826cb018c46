/**
 * Workload manifests for the e2e suites, applied with `mesh.apply`: Pods and Deployments of the
 * built-in images (ambient/echo answers with its pod name, ambient/client idles until exec'd),
 * optionally pinned to a node (`spec.nodeName`). Namespaces and policies come from
 * test/netns/support/mesh-manifests.ts.
 */

export interface WorkloadOptions {
  readonly namespace: string;
  readonly name: string;
  readonly serviceAccount: string;
  /** `spec.nodeName`: the scheduler is bypassed. */
  readonly node?: string;
  /** Extra pod labels; `app: <name>` is always set. */
  readonly labels?: Readonly<Record<string, string>>;
  /** Echo ports: one ambient/echo container per port (default [8080]); ignored for clients. */
  readonly ports?: readonly number[];
}

function labelsYaml(labels: Readonly<Record<string, string>>, indent: string): string {
  return Object.entries(labels)
    .map(([k, v]) => `${indent}${k}: ${JSON.stringify(v)}`)
    .join('\n');
}

function podSpecYaml(o: WorkloadOptions, image: 'echo' | 'client', indent: string): string {
  const lines = [`${indent}serviceAccountName: ${o.serviceAccount}`];
  if (o.node !== undefined) lines.push(`${indent}nodeName: ${o.node}`);
  lines.push(`${indent}containers:`);
  if (image === 'client') {
    lines.push(`${indent}- name: client`, `${indent}  image: ambient/client`);
  } else {
    for (const port of o.ports ?? [8080]) {
      lines.push(
        `${indent}- name: echo-${port}`,
        `${indent}  image: ambient/echo`,
        `${indent}  args: ["--port", "${port}"]`,
        `${indent}  ports:`,
        `${indent}  - containerPort: ${port}`,
        `${indent}  readinessProbe:`,
        `${indent}    httpGet: { path: /healthz, port: ${port} }`,
        `${indent}    periodSeconds: 1`,
      );
    }
  }
  return lines.join('\n');
}

/** A standalone Pod running the echo sample (or the idle client). */
export function podYaml(o: WorkloadOptions, image: 'echo' | 'client'): string {
  return `apiVersion: v1
kind: Pod
metadata:
  name: ${o.name}
  namespace: ${o.namespace}
  labels:
${labelsYaml({ app: o.name, ...o.labels }, '    ')}
spec:
${podSpecYaml(o, image, '  ')}
`;
}

/** A Deployment of the echo sample (or the client); `restartedAt` changes the template, as `kubectl rollout restart`. */
export function deploymentYaml(
  o: WorkloadOptions & { readonly replicas: number; readonly restartedAt?: string },
  image: 'echo' | 'client',
): string {
  const annotations =
    o.restartedAt === undefined
      ? ''
      : `      annotations:\n        kubectl.kubernetes.io/restartedAt: "${o.restartedAt}"\n`;
  return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: ${o.name}
  namespace: ${o.namespace}
spec:
  replicas: ${o.replicas}
  selector:
    matchLabels:
      app: ${o.name}
  template:
    metadata:
      labels:
${labelsYaml({ app: o.name, ...o.labels }, '        ')}
${annotations}    spec:
${podSpecYaml(o, image, '      ')}
`;
}

/** A ClusterIP Service selecting `app: <app>`, each port → its targetPort. */
export function serviceYaml(o: {
  namespace: string;
  name: string;
  app: string;
  ports: readonly { port: number; targetPort: number }[];
}): string {
  return `apiVersion: v1
kind: Service
metadata:
  name: ${o.name}
  namespace: ${o.namespace}
spec:
  selector:
    app: ${o.app}
  ports:
${o.ports.map((p) => `  - name: tcp-${p.port}\n    port: ${p.port}\n    targetPort: ${p.targetPort}`).join('\n')}
`;
}
