import { type HboneSettings, resolveHboneSettings } from '@ambient/common/hbone/settings';

/** ztunnel's per-pod listener ports (spec §2.1). */
export const PROXY_PORTS = Object.freeze({
  /** Outbound capture: the pod's connections to anywhere, redirected by the pod's NAT rules. */
  OUTBOUND: 15001,
  /** Inbound plaintext capture. */
  INBOUND_PLAINTEXT: 15006,
  /** Inbound HBONE (mTLS + HTTP/2 CONNECT). */
  INBOUND: 15008,
} as const);

/**
 * The data-path settings of every per-pod proxy. The app's config.ts reads the environment and
 * fills this; nothing here reads `process.env`.
 */
export interface ProxyConfig {
  readonly outboundPort: number;
  readonly inboundPlaintextPort: number;
  readonly inboundPort: number;
  /** Destination ports that would loop into ztunnel (ztunnel `illegal_ports`). */
  readonly illegalPorts: readonly number[];
  /** TCP connect timeout to apps and plain-TCP upstreams (ztunnel: 10 s). */
  readonly connectTimeoutMs: number;
  /** How long a connection waits for the pod to appear in WDS (ztunnel: 5 s). */
  readonly workloadWaitTimeoutMs: number;
  /**
   * Connect to the app with the client's IP as source (IP_TRANSPARENT + IP_FREEBIND), falling
   * back to no spoofing when the kernel refuses (ztunnel `ENABLE_ORIG_SRC`).
   */
  readonly preserveSource: boolean;
  /** Answer 200 with the destination's `baggage` (ztunnel `ENABLE_RESPONSE_BAGGAGE`, default on). */
  readonly responseBaggage: boolean;
  /** HTTP/2 windows, limits, keepalive and HBONE connect timeout. */
  readonly hbone: HboneSettings;
  /** Streams per pooled HBONE connection before another is opened (ztunnel 100). */
  readonly poolMaxStreamsPerConnection: number;
  /** Idle pooled HBONE connections are closed after this (ztunnel 5 min). */
  readonly poolIdleTimeoutMs: number;
  /** How long a stopping proxy lets connections finish before closing them (ztunnel 5 s default). */
  readonly drainDeadlineMs: number;
}

export type ProxyConfigOverrides = Partial<Omit<ProxyConfig, 'hbone'>> & {
  readonly hbone?: Partial<HboneSettings>;
};

/** ztunnel's defaults, with `overrides` applied; the illegal ports follow the listener ports. */
export function resolveProxyConfig(overrides: ProxyConfigOverrides = {}): ProxyConfig {
  const outboundPort = overrides.outboundPort ?? PROXY_PORTS.OUTBOUND;
  const inboundPlaintextPort = overrides.inboundPlaintextPort ?? PROXY_PORTS.INBOUND_PLAINTEXT;
  const inboundPort = overrides.inboundPort ?? PROXY_PORTS.INBOUND;
  const config: ProxyConfig = {
    outboundPort,
    inboundPlaintextPort,
    inboundPort,
    illegalPorts: Object.freeze([
      ...new Set(overrides.illegalPorts ?? [outboundPort, inboundPlaintextPort, inboundPort]),
    ]),
    connectTimeoutMs: overrides.connectTimeoutMs ?? 10_000,
    workloadWaitTimeoutMs: overrides.workloadWaitTimeoutMs ?? 5_000,
    preserveSource: overrides.preserveSource ?? true,
    responseBaggage: overrides.responseBaggage ?? true,
    hbone: resolveHboneSettings(overrides.hbone),
    poolMaxStreamsPerConnection: overrides.poolMaxStreamsPerConnection ?? 100,
    poolIdleTimeoutMs: overrides.poolIdleTimeoutMs ?? 5 * 60_000,
    drainDeadlineMs: overrides.drainDeadlineMs ?? 5_000,
  };
  for (const [name, port] of [
    ['outboundPort', outboundPort],
    ['inboundPlaintextPort', inboundPlaintextPort],
    ['inboundPort', inboundPort],
  ] as const) {
    if (!Number.isInteger(port) || port < 0 || port > 65_535) {
      throw new RangeError(`proxy ${name} is ${port}; it must be a port number in 0..65535`);
    }
  }
  for (const [name, ms] of [
    ['connectTimeoutMs', config.connectTimeoutMs],
    ['workloadWaitTimeoutMs', config.workloadWaitTimeoutMs],
    ['poolIdleTimeoutMs', config.poolIdleTimeoutMs],
    ['drainDeadlineMs', config.drainDeadlineMs],
  ] as const) {
    if (!Number.isFinite(ms) || ms < 0) {
      throw new RangeError(`proxy ${name} is ${ms}; it must be a non-negative number of milliseconds`);
    }
  }
  return Object.freeze(config);
}
