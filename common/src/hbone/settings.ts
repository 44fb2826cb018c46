import type * as http2 from 'node:http2';
import type { SessionTransport } from './session-transport.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * HTTP/2 and connection parameters of HBONE (spec §1.1, ztunnel `config.rs`, `proxy/h2/*.rs`).
 * The env-overridable ones (`HTTP2_STREAM_WINDOW_SIZE`, `HTTP2_CONNECTION_WINDOW_SIZE`,
 * `HTTP2_FRAME_SIZE`, `POOL_*`) are read by the owning component's config.ts and passed in.
 */
export interface HboneSettings {
  /** Per-stream receive window advertised as SETTINGS_INITIAL_WINDOW_SIZE. */
  readonly streamWindowSize: number;
  /** Connection receive window, raised with `session.setLocalWindowSize` once connected. */
  readonly connectionWindowSize: number;
  /** SETTINGS_MAX_FRAME_SIZE: the largest DATA frame we accept. */
  readonly maxFrameSize: number;
  /** Largest response header list the client accepts. */
  readonly clientMaxHeaderListSize: number;
  /** Largest request header list the server accepts; larger requests get RST_STREAM. */
  readonly serverMaxHeaderListSize: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS the server advertises. */
  readonly serverMaxConcurrentStreams: number;
  /** Idle time between keepalive PINGs (measured from the previous PONG). */
  readonly keepaliveIntervalMs: number;
  /** The connection is dropped if a PING is not acknowledged within this time. */
  readonly keepaliveTimeoutMs: number;
  /** Dial + TLS handshake + the peer's SETTINGS must complete within this (ztunnel: 10 s TCP connect). */
  readonly connectTimeoutMs: number;
  /**
   * nghttp2 session memory budget in MB (Node's `maxSessionMemory`, default 10). It counts queued
   * outbound data and buffered inbound data, so it must exceed the connection window or Node
   * refuses new streams with ENHANCE_YOUR_CALM under load.
   */
  readonly maxSessionMemoryMb: number;
  /**
   * Bytes a server HTTP/2 connection may queue towards a slow socket before its writes are held
   * back: its kernel send buffer size (SO_SNDBUFFORCE), or, without CAP_NET_ADMIN, what a
   * {@link SessionTransport} accepts. Must exceed the peer's connection window, or two busy Node
   * peers can deadlock; a peer that stops reading can make us hold at most this much.
   */
  readonly sessionWriteBudget: number;
}

/** ztunnel's defaults. */
export const DEFAULT_HBONE_SETTINGS: HboneSettings = Object.freeze({
  streamWindowSize: 4 * MiB,
  connectionWindowSize: 16 * MiB,
  maxFrameSize: 1 * MiB,
  clientMaxHeaderListSize: 16 * KiB,
  serverMaxHeaderListSize: 64 * KiB,
  serverMaxConcurrentStreams: 200,
  keepaliveIntervalMs: 10_000,
  keepaliveTimeoutMs: 20_000,
  connectTimeoutMs: 10_000,
  maxSessionMemoryMb: 64,
  sessionWriteBudget: 32 * MiB,
});

/** Fills unset fields from {@link DEFAULT_HBONE_SETTINGS} and checks the HTTP/2 ranges. */
export function resolveHboneSettings(overrides: Partial<HboneSettings> = {}): HboneSettings {
  const s: HboneSettings = { ...DEFAULT_HBONE_SETTINGS, ...overrides };
  // RFC 9113 §6.5.2 ranges; Node throws an opaque ERR_HTTP2_INVALID_SETTING_VALUE otherwise.
  checkRange('streamWindowSize', s.streamWindowSize, 0, 2 ** 31 - 1);
  checkRange('connectionWindowSize', s.connectionWindowSize, 65_535, 2 ** 31 - 1);
  checkRange('maxFrameSize', s.maxFrameSize, 16_384, 2 ** 24 - 1);
  checkRange('clientMaxHeaderListSize', s.clientMaxHeaderListSize, 1, 2 ** 32 - 1);
  checkRange('serverMaxHeaderListSize', s.serverMaxHeaderListSize, 1, 2 ** 32 - 1);
  checkRange('serverMaxConcurrentStreams', s.serverMaxConcurrentStreams, 1, 2 ** 32 - 1);
  checkRange('keepaliveIntervalMs', s.keepaliveIntervalMs, 1, 2 ** 31 - 1);
  checkRange('keepaliveTimeoutMs', s.keepaliveTimeoutMs, 1, 2 ** 31 - 1);
  checkRange('connectTimeoutMs', s.connectTimeoutMs, 1, 2 ** 31 - 1);
  checkRange('maxSessionMemoryMb', s.maxSessionMemoryMb, 1, 2 ** 20);
  checkRange('sessionWriteBudget', s.sessionWriteBudget, 64 * KiB, 2 ** 31 - 1);
  return Object.freeze(s);
}

function checkRange(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`hbone setting ${name} is ${value}; it must be an integer in ${min}..${max}`);
  }
}

/** `http2.connect` options for an HBONE client session. */
export function clientSessionOptions(s: HboneSettings): http2.SecureClientSessionOptions {
  return {
    settings: {
      enablePush: false,
      initialWindowSize: s.streamWindowSize,
      maxFrameSize: s.maxFrameSize,
      maxHeaderListSize: s.clientMaxHeaderListSize,
    },
    maxSessionMemory: s.maxSessionMemoryMb,
  };
}

/** `http2.createServer` options for an HBONE server. */
export function serverSessionOptions(s: HboneSettings): http2.ServerOptions {
  return {
    settings: {
      enablePush: false,
      initialWindowSize: s.streamWindowSize,
      maxFrameSize: s.maxFrameSize,
      maxHeaderListSize: s.serverMaxHeaderListSize,
      maxConcurrentStreams: s.serverMaxConcurrentStreams,
    },
    maxSessionMemory: s.maxSessionMemoryMb,
  };
}
