import { errorMessage, MeshError } from '@ambient/common/errors';
import type { Logger } from '@ambient/common/log';
import { formatSocketAddr, type SocketAddr } from '@ambient/common/model';

/** `outbound` for reporter=source, `inbound` for reporter=destination (spec §9.2). */
export type TrafficDirection = 'outbound' | 'inbound';

/**
 * The access log fields of one connection (spec §9.2), keyed as ztunnel names them. Optional
 * fields are left out when unknown, as ztunnel's `Option` fields are.
 */
export interface AccessLogFields {
  readonly 'src.addr': string;
  readonly 'src.workload'?: string;
  readonly 'src.namespace'?: string;
  /** Only with mTLS: the peer identity (inbound) or the identity we presented (outbound). */
  readonly 'src.identity'?: string;
  readonly 'src.cluster'?: string;
  readonly 'dst.addr': string;
  /** The CONNECT `:authority`, for HBONE. */
  readonly 'dst.hbone_addr'?: string;
  readonly 'dst.service'?: string;
  readonly 'dst.workload'?: string;
  readonly 'dst.namespace'?: string;
  /** Only with mTLS. */
  readonly 'dst.identity'?: string;
  readonly 'dst.cluster'?: string;
  readonly direction: TrafficDirection;
}

/** The fields of a failed connection: `error` is the message, `error_code` the stable code. */
export function errorFields(err: unknown): { error: string; error_code?: string } {
  if (err instanceof MeshError) return { error: err.message, error_code: err.code };
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string'
    ? { error: errorMessage(err), error_code: code }
    : { error: errorMessage(err) };
}

/**
 * ztunnel `log_early_deny`: a connection refused before enough was known for metrics and a full
 * access log (self-call, unknown source, bad CONNECT, ip mismatch). One WARN line,
 * `connection failed`, with the addresses, the direction and the error.
 */
export function logEarlyDeny(
  log: Logger,
  entry: { readonly src: SocketAddr; readonly dst: SocketAddr; readonly direction: TrafficDirection },
  err: unknown,
): void {
  log.warn(
    {
      'src.addr': formatSocketAddr(entry.src),
      'dst.addr': formatSocketAddr(entry.dst),
      direction: entry.direction,
      ...errorFields(err),
    },
    'connection failed',
  );
}
