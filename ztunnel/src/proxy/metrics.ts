import { formatIdentity, type Identity } from '@ambient/common/identity';
import type { Logger } from '@ambient/common/log';
import { formatSocketAddr, type Service, type SocketAddr, type Workload } from '@ambient/common/model';
import { Counter, type Registry } from 'prom-client';
import { type AccessLogFields, errorFields, type TrafficDirection } from './access-log.ts';
import type { CopyObserver } from './copy.ts';

/** The label set of the `istio_tcp_*` metrics (ztunnel `CommonTrafficLabels`, spec §9.1), in its order. */
export const TRAFFIC_LABEL_NAMES = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
] as const;

export type TrafficLabelName = (typeof TRAFFIC_LABEL_NAMES)[number];
export type TrafficLabels = Record<TrafficLabelName, string>;

/** `source` on the client side (outbound), `destination` on the server side (inbound). */
export type Reporter = 'source' | 'destination';

/**
 * ztunnel's `response_flags`: `-`, `DENY` (policy), `CONNECT` (no upstream connection). The other
 * upstream values (`TLS_FAILURE`, …) are not produced here yet.
 */
export type ResponseFlag = '-' | 'DENY' | 'CONNECT';

/** A source described by the connection (mTLS identity, baggage) rather than found in WDS. */
export interface DerivedWorkload {
  readonly workloadName?: string;
  readonly app?: string;
  readonly revision?: string;
  readonly namespace?: string;
  /** The identity proven by mTLS; the only source of `source_principal`. */
  readonly identity?: Identity;
  readonly clusterId?: string;
}

/** What is known about a connection when it is accepted for proxying (ztunnel `ConnectionOpen`). */
export interface ConnectionOpen {
  readonly reporter: Reporter;
  /** The source workload from WDS (the local pod outbound; looked up by peer IP inbound). */
  readonly source?: Workload;
  readonly derivedSource?: DerivedWorkload;
  /** The workload terminating the next hop (outbound) or the local pod (inbound). */
  readonly destination?: Workload;
  readonly destinationService?: Service;
  /** HBONE (`mutual_tls`) or plain TCP (`unknown`). */
  readonly mtls: boolean;
}

const UNKNOWN = 'unknown';

function orUnknown(v: string | undefined): string {
  return v === undefined || v === '' ? UNKNOWN : v;
}

/**
 * The label values for a connection, as ztunnel computes them: everything `unknown` by default,
 * then the derived source, then the WDS source (more reliable, so it wins for names), then the
 * destination workload and service. `source_principal` only ever comes from the derived source.
 */
export function trafficLabels(open: ConnectionOpen, flag: ResponseFlag = '-'): TrafficLabels {
  const l = Object.fromEntries(TRAFFIC_LABEL_NAMES.map((n) => [n, UNKNOWN])) as TrafficLabels;
  l.reporter = open.reporter;
  l.request_protocol = 'tcp';
  l.response_flags = flag;
  l.connection_security_policy = open.mtls ? 'mutual_tls' : UNKNOWN;
  const d = open.derivedSource;
  if (d !== undefined) {
    l.source_workload = orUnknown(d.workloadName);
    l.source_canonical_service = orUnknown(d.app);
    l.source_canonical_revision = orUnknown(d.revision);
    l.source_workload_namespace = orUnknown(d.namespace);
    // ztunnel fills source_app from the workload name for a derived source.
    l.source_app = orUnknown(d.workloadName);
    l.source_version = orUnknown(d.revision);
    l.source_cluster = orUnknown(d.clusterId);
    l.source_principal = d.identity === undefined ? UNKNOWN : formatIdentity(d.identity);
  }
  const s = open.source;
  if (s !== undefined) {
    l.source_workload = orUnknown(s.workloadName);
    l.source_canonical_service = orUnknown(s.canonicalName);
    l.source_canonical_revision = orUnknown(s.canonicalRevision);
    l.source_workload_namespace = orUnknown(s.namespace);
    l.source_app = orUnknown(s.canonicalName);
    l.source_version = orUnknown(s.canonicalRevision);
    l.source_cluster = orUnknown(s.clusterId);
  }
  const w = open.destination;
  if (w !== undefined) {
    l.destination_workload = orUnknown(w.workloadName);
    l.destination_canonical_service = orUnknown(w.canonicalName);
    l.destination_canonical_revision = orUnknown(w.canonicalRevision);
    l.destination_workload_namespace = orUnknown(w.namespace);
    l.destination_principal = formatIdentity(w.identity);
    l.destination_app = orUnknown(w.canonicalName);
    l.destination_version = orUnknown(w.canonicalRevision);
    l.destination_cluster = orUnknown(w.clusterId);
  }
  const svc = open.destinationService;
  if (svc !== undefined) {
    l.destination_service = orUnknown(svc.hostname);
    l.destination_service_name = orUnknown(svc.name);
    l.destination_service_namespace = orUnknown(svc.namespace);
  }
  return l;
}

/**
 * ztunnel's connection metrics, registered in the registry given (the `istio_` prefix is part of
 * the names; prom-client adds nothing). One instance per registry, shared by every pod's proxy.
 */
export class ProxyMetrics {
  readonly connectionsOpened: Counter<TrafficLabelName>;
  readonly connectionsClosed: Counter<TrafficLabelName>;
  /** Bytes from the downstream towards the upstream (request bytes), for both reporters. */
  readonly receivedBytes: Counter<TrafficLabelName>;
  /** Bytes from the upstream towards the downstream (response bytes), for both reporters. */
  readonly sentBytes: Counter<TrafficLabelName>;
  /** Connections that ended with an error (unstable in ztunnel). */
  readonly connectionsFailed: Counter<TrafficLabelName>;

  constructor(registry: Registry) {
    const counter = (name: string, help: string): Counter<TrafficLabelName> =>
      new Counter({ name, help, labelNames: TRAFFIC_LABEL_NAMES, registers: [registry] });
    this.connectionsOpened = counter(
      'istio_tcp_connections_opened_total',
      'The total number of TCP connections opened',
    );
    this.connectionsClosed = counter(
      'istio_tcp_connections_closed_total',
      'The total number of TCP connections closed',
    );
    this.receivedBytes = counter(
      'istio_tcp_received_bytes_total',
      'The size of total bytes received during request in case of a TCP connection',
    );
    this.sentBytes = counter(
      'istio_tcp_sent_bytes_total',
      'The size of total bytes sent during response in case of a TCP connection',
    );
    this.connectionsFailed = counter(
      'istio_tcp_connections_failed_total',
      'The total number of TCP connections that failed (unstable)',
    );
  }
}

/** Where and how a connection is reported. */
export interface ConnectionResultOptions {
  /** The downstream peer. */
  readonly src: SocketAddr;
  /** The L4 destination: the dialled address outbound, the listener's address inbound. */
  readonly dst: SocketAddr;
  /** The CONNECT `:authority`, for HBONE. */
  readonly hboneTarget?: string;
  readonly open: ConnectionOpen;
  readonly metrics: ProxyMetrics;
  /** The `access` scope logger. */
  readonly accessLog: Logger;
  /** When the connection was accepted (performance.now()); default now. */
  readonly start?: number;
}

// Byte counters are pushed in batches: prom-client hashes the whole label set on each inc().
const FLUSH_BYTES = 256 * 1024;
const FLUSH_INTERVAL_MS = 1000;

/**
 * The metrics and access log of one connection (ztunnel `ConnectionResult`): counts it as opened
 * when created, counts bytes as they are copied, and on {@link record} counts it as closed (and
 * failed, with an error), writes the `connection complete` line, and freezes. Recording twice is
 * a no-op.
 */
export class ConnectionResult implements CopyObserver {
  readonly #o: ConnectionResultOptions;
  readonly #start: number;
  #labels: TrafficLabels;
  #recv = 0;
  #sent = 0;
  #recvFlushed = 0;
  #sentFlushed = 0;
  #lastFlush: number;
  #recorded = false;

  constructor(options: ConnectionResultOptions) {
    this.#o = options;
    this.#start = options.start ?? performance.now();
    this.#lastFlush = performance.now();
    this.#labels = trafficLabels(options.open);
    options.metrics.connectionsOpened.inc(this.#labels);
    if (options.accessLog.isLevelEnabled('debug')) {
      options.accessLog.debug(this.#fields(), 'connection opened');
    }
  }

  get reporter(): Reporter {
    return this.#o.open.reporter;
  }

  get recorded(): boolean {
    return this.#recorded;
  }

  /** Bytes downstream → upstream so far (ztunnel "recv"). */
  get bytesFromDownstream(): number {
    return this.#recv;
  }

  /** Bytes upstream → downstream so far (ztunnel "sent"). */
  get bytesFromUpstream(): number {
    return this.#sent;
  }

  downstreamToUpstream(bytes: number): void {
    this.#recv += bytes;
    this.#maybeFlush();
  }

  upstreamToDownstream(bytes: number): void {
    this.#sent += bytes;
    this.#maybeFlush();
  }

  /**
   * Final result: `connection complete` at info, or at error with `error`/`error_code` when
   * `err` is set; `flag` becomes `response_flags` on the closed (and failed) counters.
   */
  record(err?: unknown, flag: ResponseFlag = '-'): void {
    if (this.#recorded) return;
    this.#recorded = true;
    this.#flush();
    const labels =
      flag === this.#labels.response_flags ? this.#labels : { ...this.#labels, response_flags: flag };
    const m = this.#o.metrics;
    m.connectionsClosed.inc(labels);
    if (err !== undefined) m.connectionsFailed.inc(labels);
    // Istio flips the byte metrics for reporter=source (istio#32399); the log un-flips them.
    const source = this.#o.open.reporter === 'source';
    const fields = {
      ...this.#fields(),
      bytes_sent: source ? this.#recv : this.#sent,
      bytes_recv: source ? this.#sent : this.#recv,
      duration: `${Math.round(performance.now() - this.#start)}ms`,
    };
    if (err === undefined) this.#o.accessLog.info(fields, 'connection complete');
    else this.#o.accessLog.error({ ...fields, ...errorFields(err) }, 'connection complete');
  }

  #maybeFlush(): void {
    const pending = this.#recv - this.#recvFlushed + (this.#sent - this.#sentFlushed);
    if (pending >= FLUSH_BYTES || performance.now() - this.#lastFlush >= FLUSH_INTERVAL_MS) this.#flush();
  }

  #flush(): void {
    this.#lastFlush = performance.now();
    const m = this.#o.metrics;
    if (this.#recv > this.#recvFlushed) {
      m.receivedBytes.inc(this.#labels, this.#recv - this.#recvFlushed);
      this.#recvFlushed = this.#recv;
    }
    if (this.#sent > this.#sentFlushed) {
      m.sentBytes.inc(this.#labels, this.#sent - this.#sentFlushed);
      this.#sentFlushed = this.#sent;
    }
  }

  #fields(): AccessLogFields {
    const { open } = this.#o;
    const mtls = open.mtls;
    const l = this.#labels;
    const known = (v: string): string | undefined => (v === UNKNOWN ? undefined : v);
    // Names: the pod name, else the canonical service (ztunnel `ConnectionResult::new`).
    const srcWorkload = open.source?.name || known(l.source_canonical_service);
    const dstWorkload = open.destination?.name || known(l.destination_canonical_service);
    const direction: TrafficDirection = open.reporter === 'source' ? 'outbound' : 'inbound';
    const fields: Record<string, string> = { 'src.addr': formatSocketAddr(this.#o.src) };
    const put = (k: string, v: string | undefined): void => {
      if (v !== undefined && v !== '') fields[k] = v;
    };
    put('src.workload', srcWorkload);
    put('src.namespace', known(l.source_workload_namespace));
    if (mtls) put('src.identity', known(l.source_principal));
    fields['dst.addr'] = formatSocketAddr(this.#o.dst);
    put('dst.hbone_addr', this.#o.hboneTarget);
    put('dst.service', known(l.destination_service));
    put('dst.workload', dstWorkload);
    put('dst.namespace', known(l.destination_workload_namespace));
    if (mtls) put('dst.identity', known(l.destination_principal));
    fields.direction = direction;
    return fields as unknown as AccessLogFields;
  }
}
