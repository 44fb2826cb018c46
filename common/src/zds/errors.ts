import { MeshError } from '../errors.ts';

/** Why a ZDS operation failed; stable, used in logs and metrics labels. */
export type ZdsErrorCode =
  /**
   * The peer broke the wire contract: an undecodable or oversized datagram, a missing or unexpected
   * fd, a message out of sequence (Keep after the snapshot, Del before it), a wrong hello version.
   */
  | 'ZDS_PROTOCOL'
  /** The received fd on an AddWorkload is not a network namespace. */
  | 'ZDS_NOT_NETNS'
  /** No hello or Ack arrived within the deadline. */
  | 'ZDS_TIMEOUT'
  /** ztunnel answered with an Ack carrying an error text (`message` holds the text). */
  | 'ZDS_NACK'
  /** The connection closed (peer gone, write failed, or stopped locally) before the exchange finished. */
  | 'ZDS_CLOSED'
  /** There is no connected ztunnel to send an AddWorkload to. */
  | 'ZDS_NO_CONNECTION'
  /** The node agent's snapshot provider failed, so no snapshot could be sent on a new connection. */
  | 'ZDS_SNAPSHOT'
  /** The server could not listen at its socket path (`cause` holds the system error). */
  | 'ZDS_LISTEN';

/** A ZDS failure on either side (istio-cni node agent or ztunnel). */
export class ZdsError extends MeshError<ZdsErrorCode> {}
