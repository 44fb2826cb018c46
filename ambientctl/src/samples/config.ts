/**
 * What the sample programs read from their environment: the downward-API variables the pod
 * runner sets in every container (POD_NAME, POD_NAMESPACE, POD_IP, NODE_NAME) and the echo
 * server's PORT. Missing values read as `unknown`; the samples must start anywhere.
 */
export interface SampleEnv {
  readonly podName: string;
  readonly namespace: string;
  readonly node: string;
  readonly podIp: string;
  /** PORT, default 8080. */
  readonly port: number;
}

export function readSampleEnv(env: NodeJS.ProcessEnv = process.env): SampleEnv {
  const port = Number(env.PORT ?? '8080');
  return {
    podName: env.POD_NAME ?? 'unknown',
    namespace: env.POD_NAMESPACE ?? 'unknown',
    node: env.NODE_NAME ?? 'unknown',
    podIp: env.POD_IP ?? 'unknown',
    port: Number.isInteger(port) && port > 0 && port < 65536 ? port : 8080,
  };
}
