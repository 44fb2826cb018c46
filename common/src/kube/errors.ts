import { MeshError } from '../errors.ts';

export type KubeErrorCode =
  /** The kubeconfig file or the in-cluster service account could not be loaded. */
  | 'KUBECONFIG_INVALID'
  /** The API server answered with an error status (or a watch ERROR event) other than those below. */
  | 'API_STATUS'
  /** 410 Gone: the resourceVersion or continue token was compacted away; a relist is needed. */
  | 'RESOURCE_GONE'
  /** 404 on a collection: the kind is not served (a CRD that is not installed). */
  | 'KIND_NOT_SERVED'
  /** The request failed below HTTP: connection refused or reset, TLS, DNS. */
  | 'TRANSPORT'
  /** The API server sent something that is not the JSON it should be. */
  | 'DECODE'
  /** The source stopped before every kind synced. */
  | 'STOPPED';

/** An error talking to the Kubernetes API; `status` is the HTTP or Status code when there was one. */
export class KubeError extends MeshError<KubeErrorCode> {
  readonly status: number | undefined;

  constructor(
    code: KubeErrorCode,
    message: string,
    options: { cause?: unknown; retryable?: boolean; status?: number } = {},
  ) {
    super(code, message, options);
    this.status = options.status;
  }
}
