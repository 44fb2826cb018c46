import { MeshError } from '../errors.ts';

/** Why an HBONE operation failed; stable, used as the metrics label and access-log `error`. */
export type HboneErrorCode =
  /** The CONNECT was answered with a status other than 200 (`status` holds it). */
  | 'HBONE_STATUS'
  /** The peer reset the stream with a code other than NO_ERROR or CANCEL (`rstCode` holds it). */
  | 'HBONE_STREAM_RESET'
  /** A write after the peer reset the stream with NO_ERROR or CANCEL: the peer reads no more. */
  | 'HBONE_BROKEN_PIPE'
  /** The HTTP/2 connection carrying the stream closed or failed before the stream finished. */
  | 'HBONE_SESSION_CLOSED'
  /** The connection received GOAWAY and takes no new streams. */
  | 'HBONE_GOAWAY'
  /** Dialling, TLS and the peer's SETTINGS did not complete within the connect timeout. */
  | 'HBONE_CONNECT_TIMEOUT'
  /** Dialling the peer failed at the TCP or TLS layer (`cause` holds the reason). */
  | 'HBONE_DIAL_FAILED'
  /** No PING acknowledgement arrived within the keepalive timeout. */
  | 'HBONE_KEEPALIVE_TIMEOUT'
  /** A CONNECT authority that is neither `ip:port` nor `hostname:port` (answered 400). */
  | 'HBONE_AUTHORITY'
  /** A request whose method is not CONNECT (answered 400). */
  | 'HBONE_METHOD'
  /** The server's request handler threw before answering (answered 503). */
  | 'HBONE_HANDLER_FAILED'
  /** The request was given up by its caller (AbortSignal) before the tunnel was established. */
  | 'HBONE_ABORTED'
  /** The pool or server was closed. */
  | 'HBONE_CLOSED';

/** An HBONE failure, with the HTTP status or RST_STREAM code when the peer supplied one. */
export class HboneError extends MeshError<HboneErrorCode> {
  /** `:status` of a refused CONNECT (code `HBONE_STATUS`). */
  readonly status: number | undefined;
  /** RST_STREAM / GOAWAY error code received from the peer, when there was one. */
  readonly rstCode: number | undefined;

  constructor(
    code: HboneErrorCode,
    message: string,
    options: { cause?: unknown; retryable?: boolean; status?: number; rstCode?: number } = {},
  ) {
    super(code, message, options);
    this.status = options.status;
    this.rstCode = options.rstCode;
  }

  override toJSON(): Record<string, unknown> {
    const out = super.toJSON();
    if (this.status !== undefined) out.status = this.status;
    if (this.rstCode !== undefined) out.rstCode = this.rstCode;
    return out;
  }
}
