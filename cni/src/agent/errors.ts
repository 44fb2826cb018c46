import { MeshError } from '@ambient/common/errors';

/**
 * Stable codes of node agent failures. `retryable` follows upstream's `NonRetryableAddError`
 * split: a pod whose enrollment may succeed later (ztunnel not connected, netns not there yet,
 * a transient nft failure) is retried; a pod that can never be enrolled as it is is not.
 * - `POD_UNKNOWN`: the plugin asked about a pod the config source does not (yet) know;
 * - `NETNS_NOT_FOUND`: the pod's network namespace could not be found or opened;
 * - `REDIRECTION_FAILED`: installing, checking or removing the in-pod rules failed;
 * - `ZDS_ADD_FAILED`: ztunnel did not accept the pod (no connection, NACK, timeout); the pod is
 *   annotated `pending` and its rules stay, so its traffic is blocked rather than unmeshed;
 * - `ZDS_DEL_FAILED`: telling ztunnel to drop the pod failed;
 * - `PROBE_SET_FAILED`: the host probe SNAT set could not be updated;
 * - `ANNOTATION_FAILED`: the `ambient.istio.io/redirection` annotation could not be written;
 * - `POD_CACHE_INVALID`: the persisted pod cache could not be read.
 */
export type AgentErrorCode =
  | 'POD_UNKNOWN'
  | 'NETNS_NOT_FOUND'
  | 'REDIRECTION_FAILED'
  | 'ZDS_ADD_FAILED'
  | 'ZDS_DEL_FAILED'
  | 'PROBE_SET_FAILED'
  | 'ANNOTATION_FAILED'
  | 'POD_CACHE_INVALID';

export class AgentError extends MeshError<AgentErrorCode> {}
