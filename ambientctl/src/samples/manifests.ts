/**
 * The sample workloads `ambientctl up` applies: an HTTP echo server and a client in namespace
 * `demo` (labelled for ambient), and a client in namespace `legacy` outside the mesh.
 */

/** Namespaces the samples live in. */
export const DEMO_NAMESPACE = 'demo';
export const LEGACY_NAMESPACE = 'legacy';
/** The echo Service's port and the container port behind it. */
export const ECHO_SERVICE_PORT = 80;
export const ECHO_CONTAINER_PORT = 8080;
/** Service accounts, hence the SPIFFE identities `spiffe://cluster.local/ns/<ns>/sa/<sa>`. */
export const ECHO_SERVICE_ACCOUNT = 'echo';
export const CLIENT_SERVICE_ACCOUNT = 'client';

export const SAMPLE_MANIFESTS = `# Sample workloads of the local mesh.
apiVersion: v1
kind: Namespace
metadata:
  name: ${DEMO_NAMESPACE}
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  namespace: ${DEMO_NAMESPACE}
  labels:
    app: echo
spec:
  replicas: 2
  selector:
    matchLabels:
      app: echo
  template:
    metadata:
      labels:
        app: echo
        version: v1
    spec:
      serviceAccountName: ${ECHO_SERVICE_ACCOUNT}
      containers:
      - name: echo
        image: ambient/echo
        ports:
        - name: http
          containerPort: ${ECHO_CONTAINER_PORT}
        readinessProbe:
          httpGet:
            path: /healthz
            port: ${ECHO_CONTAINER_PORT}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: ${DEMO_NAMESPACE}
  labels:
    app: echo
spec:
  selector:
    app: echo
  ports:
  - name: http
    port: ${ECHO_SERVICE_PORT}
    targetPort: ${ECHO_CONTAINER_PORT}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
  namespace: ${DEMO_NAMESPACE}
  labels:
    app: client
spec:
  replicas: 1
  selector:
    matchLabels:
      app: client
  template:
    metadata:
      labels:
        app: client
    spec:
      serviceAccountName: ${CLIENT_SERVICE_ACCOUNT}
      containers:
      - name: client
        image: ambient/client
---
apiVersion: v1
kind: Namespace
metadata:
  name: ${LEGACY_NAMESPACE}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
  namespace: ${LEGACY_NAMESPACE}
  labels:
    app: client
spec:
  replicas: 1
  selector:
    matchLabels:
      app: client
  template:
    metadata:
      labels:
        app: client
    spec:
      serviceAccountName: ${CLIENT_SERVICE_ACCOUNT}
      containers:
      - name: client
        image: ambient/client
`;
