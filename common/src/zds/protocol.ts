/**
 * ZDS framing and message rules shared by the istio-cni node agent (server) and ztunnel (client):
 * one protobuf message per SOCK_SEQPACKET datagram with no length prefix, at most 1024 bytes, and the
 * pod's network-namespace fd as SCM_RIGHTS on AddWorkload only (`ztunnel:src/inpod/protocol.rs`,
 * `istio:cni/pkg/nodeagent/ztunnelserver.go`).
 */

import {
  Version,
  type WorkloadRequest,
  WorkloadRequestSchema,
  WorkloadResponseSchema,
  ZdsHelloSchema,
} from '@ambient/common/gen/istio/workload/zds/zds_pb';
import { closeFd, isNetns, type SeqpacketOptions } from '@ambient/native';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { errorMessage } from '../errors.ts';
import { ZdsError } from './errors.ts';

/** Where the node agent listens and ztunnel connects (ztunnel `INPOD_UDS`, CNI `ztunnel-uds-address`). */
export const ZDS_DEFAULT_SOCKET_PATH = '/var/run/ztunnel/ztunnel.sock';

/** Both upstream sides read into a 1024-byte buffer; anything longer is a protocol error. */
export const ZDS_MAX_MESSAGE_SIZE = 1024;

/** The ZDS version this implementation speaks (`ZdsHello.version`). */
export const ZDS_VERSION_V1 = Version.V1;

/**
 * Options for every ZDS socket. The transport reads more than {@link ZDS_MAX_MESSAGE_SIZE} bytes and
 * a few fds so that an oversized datagram or an extra fd reaches the protocol check (which NACKs, as
 * upstream ztunnel does on MSG_TRUNC/MSG_CTRUNC) instead of failing inside the transport, which
 * closes the socket before a NACK can be sent. Beyond these limits the transport itself reports
 * MSG_TRUNC/MSG_CTRUNC and the connection drops without a NACK.
 */
export const ZDS_SOCKET_OPTIONS: Readonly<SeqpacketOptions> = { maxMessageSize: 64 * 1024, maxFds: 4 };

/** `istio.workload.zds.WorkloadInfo`: who the pod is. */
export interface ZdsWorkloadInfo {
  /** Pod name. */
  readonly name: string;
  /** Pod namespace. */
  readonly namespace: string;
  /** `spec.serviceAccountName`. */
  readonly serviceAccount: string;
}

/** A `WorkloadRequest` as sent by the node agent (the netns fd travels beside it). */
export type ZdsRequestBody =
  | { readonly kind: 'add'; readonly uid: string; readonly info: ZdsWorkloadInfo }
  | { readonly kind: 'keep'; readonly uid: string }
  | { readonly kind: 'del'; readonly uid: string }
  | { readonly kind: 'snapshotSent' };

/**
 * A `WorkloadRequest` as received by ztunnel, validated. On `add` the receiver owns `netnsFd`, which
 * has been checked to be a network namespace.
 */
export type ZdsReceivedRequest =
  | { readonly kind: 'add'; readonly uid: string; readonly info: ZdsWorkloadInfo; readonly netnsFd: number }
  | { readonly kind: 'keep'; readonly uid: string }
  | { readonly kind: 'del'; readonly uid: string }
  | { readonly kind: 'snapshotSent' };

/** `WorkloadResponse{ack}`: `error` is empty for an ACK and holds the text of a NACK. */
export interface ZdsAck {
  readonly error: string;
}

/** A short description for logs and error messages: `add pod <uid>`, `snapshot-sent`. */
export function describeRequest(req: ZdsRequestBody | ZdsReceivedRequest): string {
  return req.kind === 'snapshotSent' ? 'snapshot-sent' : `${req.kind} pod ${req.uid}`;
}

function checkSize(bytes: Uint8Array, what: string): Uint8Array {
  if (bytes.length > ZDS_MAX_MESSAGE_SIZE) {
    throw new ZdsError(
      'ZDS_PROTOCOL',
      `${what} encodes to ${bytes.length} bytes, more than the ${ZDS_MAX_MESSAGE_SIZE}-byte zds datagram limit`,
    );
  }
  return bytes;
}

/** `ZdsHello{version: V1}`, the first datagram ztunnel sends. */
export function encodeHello(): Uint8Array {
  return toBinary(ZdsHelloSchema, create(ZdsHelloSchema, { version: Version.V1 }));
}

/**
 * Encodes a request. Throws ZdsError `ZDS_PROTOCOL` for an empty uid or a message longer than the
 * datagram limit (the peer would reject it).
 */
export function encodeRequest(req: ZdsRequestBody): Uint8Array {
  let msg: WorkloadRequest;
  switch (req.kind) {
    case 'add':
      checkUid(req.uid, 'add');
      msg = create(WorkloadRequestSchema, {
        payload: {
          case: 'add',
          value: {
            uid: req.uid,
            workloadInfo: {
              name: req.info.name,
              namespace: req.info.namespace,
              serviceAccount: req.info.serviceAccount,
            },
          },
        },
      });
      break;
    case 'keep':
      checkUid(req.uid, 'keep');
      msg = create(WorkloadRequestSchema, { payload: { case: 'keep', value: { uid: req.uid } } });
      break;
    case 'del':
      checkUid(req.uid, 'del');
      msg = create(WorkloadRequestSchema, { payload: { case: 'del', value: { uid: req.uid } } });
      break;
    case 'snapshotSent':
      msg = create(WorkloadRequestSchema, { payload: { case: 'snapshotSent', value: {} } });
      break;
  }
  return checkSize(toBinary(WorkloadRequestSchema, msg), describeRequest(req));
}

/** Room left for the error text in a NACK: the field and message headers take at most 6 bytes. */
const maxNackTextBytes = ZDS_MAX_MESSAGE_SIZE - 6;

/** Cuts `text` to at most `maxBytes` of UTF-8 without splitting a character. */
function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  let used = 0;
  let out = '';
  for (const ch of text) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (used + n > maxBytes) break;
    used += n;
    out += ch;
  }
  return out;
}

/**
 * `WorkloadResponse{ack: {error}}`: an ACK for an empty `error`, a NACK otherwise. A NACK text too
 * long for one datagram is cut (the node agent only logs it).
 */
export function encodeAck(error = ''): Uint8Array {
  return toBinary(
    WorkloadResponseSchema,
    create(WorkloadResponseSchema, {
      payload: { case: 'ack', value: { error: truncateUtf8(error, maxNackTextBytes) } },
    }),
  );
}

function checkUid(uid: string, kind: string): void {
  if (uid === '') throw new ZdsError('ZDS_PROTOCOL', `${kind} request has an empty uid`);
}

/** Closes received fds that nobody will own; a failure (already closed) changes nothing for the caller. */
export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // EBADF: nothing left to release.
    }
  }
}

function checkDatagram(data: Uint8Array, what: string): void {
  if (data.length > ZDS_MAX_MESSAGE_SIZE) {
    throw new ZdsError(
      'ZDS_PROTOCOL',
      `${what} of ${data.length} bytes is longer than the ${ZDS_MAX_MESSAGE_SIZE}-byte zds limit (truncated message)`,
    );
  }
}

function decode<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new ZdsError('ZDS_PROTOCOL', `${what} is not a valid protobuf message: ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/**
 * Validates and decodes one datagram received by ztunnel. The fd rules are upstream's: exactly one fd
 * on AddWorkload, none on anything else. On any failure every received fd is closed and a ZdsError is
 * thrown: `ZDS_PROTOCOL` for a malformed datagram or a wrong fd count, `ZDS_NOT_NETNS` when the fd on
 * an AddWorkload is not a network namespace. On success the caller owns the `add` request's fd.
 */
export function decodeRequest(data: Uint8Array, fds: readonly number[]): ZdsReceivedRequest {
  try {
    if (fds.length > 1) {
      throw new ZdsError('ZDS_PROTOCOL', `expected at most 1 fd with a workload request, got ${fds.length}`);
    }
    checkDatagram(data, 'workload request');
    const msg = decode('workload request', () => fromBinary(WorkloadRequestSchema, data));
    const fd = fds[0];
    const payload = msg.payload;
    switch (payload.case) {
      case 'add': {
        if (fd === undefined) {
          throw new ZdsError('ZDS_PROTOCOL', `add request for pod ${payload.value.uid} carries no netns fd`);
        }
        checkUid(payload.value.uid, 'add');
        const info = payload.value.workloadInfo;
        if (!info) {
          throw new ZdsError(
            'ZDS_PROTOCOL',
            `add request for pod ${payload.value.uid} has no workload_info (required)`,
          );
        }
        let netns: boolean;
        try {
          netns = isNetns(fd);
        } catch (err) {
          throw new ZdsError(
            'ZDS_NOT_NETNS',
            `fd received for pod ${payload.value.uid} cannot be inspected`,
            {
              cause: err,
            },
          );
        }
        if (!netns) {
          throw new ZdsError(
            'ZDS_NOT_NETNS',
            `fd received for pod ${payload.value.uid} is not a network namespace`,
          );
        }
        return {
          kind: 'add',
          uid: payload.value.uid,
          info: { name: info.name, namespace: info.namespace, serviceAccount: info.serviceAccount },
          netnsFd: fd,
        };
      }
      case 'keep':
      case 'del':
        if (fd !== undefined) {
          throw new ZdsError(
            'ZDS_PROTOCOL',
            `${payload.case} request for pod ${payload.value.uid} carries an unexpected fd`,
          );
        }
        checkUid(payload.value.uid, payload.case);
        return { kind: payload.case, uid: payload.value.uid };
      case 'snapshotSent':
        if (fd !== undefined) {
          throw new ZdsError('ZDS_PROTOCOL', 'snapshot-sent request carries an unexpected fd');
        }
        return { kind: 'snapshotSent' };
      default:
        throw new ZdsError('ZDS_PROTOCOL', 'workload request has no known payload');
    }
  } catch (err) {
    closeFds(fds);
    throw err;
  }
}

/** Validates and decodes a `ZdsHello` received by the node agent; only V1 is accepted. */
export function decodeHello(data: Uint8Array, fds: readonly number[]): { version: number } {
  if (fds.length > 0) {
    closeFds(fds);
    throw new ZdsError('ZDS_PROTOCOL', `hello carries ${fds.length} unexpected fd(s)`);
  }
  checkDatagram(data, 'hello');
  const hello = decode('hello', () => fromBinary(ZdsHelloSchema, data));
  if (hello.version !== Version.V1) {
    throw new ZdsError('ZDS_PROTOCOL', `hello version ${hello.version} is not V1 (1)`);
  }
  return { version: hello.version };
}

/** Validates and decodes a `WorkloadResponse` received by the node agent. */
export function decodeResponse(data: Uint8Array, fds: readonly number[]): ZdsAck {
  if (fds.length > 0) {
    closeFds(fds);
    throw new ZdsError('ZDS_PROTOCOL', `workload response carries ${fds.length} unexpected fd(s)`);
  }
  checkDatagram(data, 'workload response');
  const msg = decode('workload response', () => fromBinary(WorkloadResponseSchema, data));
  if (msg.payload.case !== 'ack') throw new ZdsError('ZDS_PROTOCOL', 'workload response has no ack');
  return { error: msg.payload.value.error };
}
