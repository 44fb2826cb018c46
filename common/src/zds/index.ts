/**
 * ZDS, the istio-cni node agent ↔ ztunnel protocol (spec §5): both sides over SOCK_SEQPACKET with
 * SCM_RIGHTS netns fds. The node agent runs a {@link ZdsServer}, ztunnel a {@link ZdsClient}.
 */
export { ZdsChannel, type ZdsChannelOptions, type ZdsDatagram } from './channel.ts';
export {
  ZdsClient,
  type ZdsClientEvents,
  type ZdsClientHandler,
  type ZdsClientOptions,
  type ZdsClientState,
} from './client.ts';
export { ZdsError, type ZdsErrorCode } from './errors.ts';
export {
  closeFds,
  decodeHello,
  decodeRequest,
  decodeResponse,
  describeRequest,
  encodeAck,
  encodeHello,
  encodeRequest,
  ZDS_DEFAULT_SOCKET_PATH,
  ZDS_MAX_MESSAGE_SIZE,
  ZDS_SOCKET_OPTIONS,
  ZDS_VERSION_V1,
  type ZdsAck,
  type ZdsReceivedRequest,
  type ZdsRequestBody,
  type ZdsWorkloadInfo,
} from './protocol.ts';
export { ZdsServer, type ZdsServerEvents, type ZdsServerOptions } from './server.ts';
export {
  type ZdsConnectionPhase,
  type ZdsConnectionState,
  ZdsServerConnection,
  type ZdsServerConnectionOptions,
  type ZdsSnapshotEntry,
  type ZdsSnapshotProvider,
} from './server-connection.ts';
export { ZdsSnapshot, ZdsSnapshotTracker } from './snapshot.ts';
