import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { type BackoffOptions, ExponentialBackoff } from '../backoff.ts';
import { errorMessage } from '../errors.ts';
import type { Component } from '../lifecycle.ts';
import { type Logger, logger } from '../log.ts';
import { CaError, type CertificateFetcher, type WorkloadCertificate } from './ca-client.ts';
import { formatIdentity, type Identity } from './identity.ts';

export type { CertificateFetcher, WorkloadCertificate } from './ca-client.ts';
export { CaError } from './ca-client.ts';

/**
 * How urgently a certificate is wanted, lowest first (ztunnel `Priority`): `background` for
 * scheduled refreshes, `warmup` for prefetching a new identity on the node, `realtime` for a
 * connection waiting on it. Among the fetches due, a higher priority starts first.
 */
export type CertPriority = 'background' | 'warmup' | 'realtime';
const RANK: Readonly<Record<CertPriority, number>> = { background: 0, warmup: 1, realtime: 2 };

/** Time as the manager sees it; injectable so tests control it. */
export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  /** Calls `fn` once after `ms`; the returned function cancels it. */
  setTimer(ms: number, fn: () => void): () => void;
}

// setTimeout fires at once for delays above 2^31-1 ms (about 24.8 days), and a 90-day
// certificate's half-life is further away than that, so long waits are chained.
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The real clock. Timers do not keep the process alive on their own. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(ms, fn) {
    let handle: NodeJS.Timeout;
    const arm = (remaining: number): void => {
      const step = Math.min(Math.max(0, remaining), MAX_TIMER_MS);
      handle = setTimeout(() => (remaining > step ? arm(remaining - step) : fn()), step);
      handle.unref();
    };
    arm(ms);
    return () => clearTimeout(handle);
  },
};

/** `Initializing` until the first fetch ends; `Unavailable` when there is no valid certificate. */
export type CertState = 'Initializing' | 'Available' | 'Unavailable';

/** One certificate of a {@link CertsDump}, as istioctl reads it. */
export interface CertDump {
  /** Base64 of the PEM, as ztunnel prints it. */
  readonly pem: string;
  /** Decimal, as istioctl parses it (`big.Int.SetString(s, 10)`). */
  readonly serialNumber: string;
  /** RFC 3339, whole seconds. */
  readonly validFrom: string;
  readonly expirationTime: string;
}

/**
 * One identity in `/config_dump`'s `certificates` (`istio:istioctl/pkg/writer/ztunnel/configdump/api.go`
 * `CertsDump`; ztunnel `admin.rs` `dump_certs`).
 */
export interface CertsDump {
  readonly identity: string;
  /** `Initializing`, `Available`, or `Unavailable: <error>`. */
  readonly state: string;
  /** The trust roots. */
  readonly rootCerts: readonly CertDump[];
  /** The leaf, then the intermediates. */
  readonly certChain: readonly CertDump[];
}

/** Defaults of {@link CertManagerOptions}. */
export const CERT_MANAGER_DEFAULTS = {
  // ztunnel `SecretManager` concurrency.
  concurrency: 8,
  // ztunnel's per-identity ExponentialBackoff: 1 s growing ×2 with 20 % jitter, capped at
  // 150 s (`CERT_REFRESH_FAILURE_RETRY_DELAY_MAX_INTERVAL`).
  backoff: { initialMs: 1_000, maxMs: 150_000, multiplier: 2, jitter: 0.2 },
  // A certificate received after its half-life (clock skew, a backdated short-lived leaf) is
  // refreshed half-way through what is left of it, but never sooner than this.
  minRefreshMs: 1_000,
} as const;

export interface CertManagerOptions {
  readonly client: CertificateFetcher;
  /** Fetches in flight at most; default 8. */
  readonly concurrency?: number;
  readonly clock?: Clock;
  readonly backoff?: Partial<BackoffOptions>;
  readonly log?: Logger;
}

/** Events of a {@link CertManager}. */
export interface CertManagerEvents {
  /** A new certificate for `identity` is in use; `previous` is the one it replaced, if any. */
  rotated: [
    info: {
      readonly identity: Identity;
      readonly certificate: WorkloadCertificate;
      readonly previous: WorkloadCertificate | undefined;
    },
  ];
  /** A fetch failed; `retained` says whether a still-valid certificate stays in use. */
  failed: [
    info: {
      readonly identity: Identity;
      readonly error: unknown;
      readonly retryInMs: number;
      readonly retained: boolean;
    },
  ];
}

interface Waiter {
  resolve(cert: WorkloadCertificate): void;
  reject(err: unknown): void;
}

interface Entry {
  readonly key: string;
  readonly identity: Identity;
  state: CertState;
  cert: WorkloadCertificate | undefined;
  error: unknown;
  /** Priority of the fetch that is due or queued. */
  priority: CertPriority;
  /** When the queued fetch became due; orders fetches of equal priority. */
  dueAt: number;
  fetching: boolean;
  cancelTimer: (() => void) | undefined;
  waiters: Waiter[];
  backoff: ExponentialBackoff | undefined;
}

/**
 * ztunnel's `SecretManager` (`ztunnel:src/identity/manager.rs`): one certificate per identity,
 * fetched once however many callers want it, refreshed at half-life, at most 8 fetches in flight
 * with higher priorities first, and a per-identity backoff on failure.
 *
 * Invariants:
 * - A certificate that is still valid is never dropped because a refresh failed: it keeps being
 *   served, and the retry comes at the backoff or at its expiry, whichever is sooner
 *   (ztunnel#1567; reliability checklist 25). Only an expired certificate makes the identity
 *   `Unavailable`.
 * - One identity's failures never delay another's: each has its own backoff.
 * - A result for an identity that was forgotten meanwhile is dropped.
 */
export class CertManager extends EventEmitter<CertManagerEvents> implements Component {
  readonly name = 'cert-manager';
  readonly #client: CertificateFetcher;
  readonly #concurrency: number;
  readonly #clock: Clock;
  readonly #backoffOptions: BackoffOptions;
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  readonly #ready = new Set<Entry>();
  #inFlight = 0;
  #stopped = false;

  constructor(options: CertManagerOptions) {
    super();
    const concurrency = options.concurrency ?? CERT_MANAGER_DEFAULTS.concurrency;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(`cert manager concurrency ${concurrency} must be a whole number of at least 1`);
    }
    this.#client = options.client;
    this.#concurrency = concurrency;
    this.#clock = options.clock ?? systemClock;
    this.#backoffOptions = { ...CERT_MANAGER_DEFAULTS.backoff, ...options.backoff };
    this.#log = options.log ?? logger('ca');
  }

  start(): void {}

  /** Cancels every scheduled refresh and fails the callers still waiting. */
  stop(): void {
    this.#stopped = true;
    for (const e of this.#entries.values()) {
      e.cancelTimer?.();
      e.cancelTimer = undefined;
      this.#settle(e, new CaError('CERT_MANAGER_STOPPED', `stopped while waiting for ${e.key}`));
    }
    this.#ready.clear();
  }

  /**
   * The certificate of `identity`: the cached one while it is valid, otherwise the result of a
   * fetch shared with every concurrent caller. Rejects with the last error when the identity is
   * `Unavailable` (its retry is already scheduled), or when it is forgotten meanwhile.
   */
  fetch(identity: Identity, priority: CertPriority = 'realtime'): Promise<WorkloadCertificate> {
    if (this.#stopped) {
      return Promise.reject(new CaError('CERT_MANAGER_STOPPED', 'the cert manager is stopped'));
    }
    const key = formatIdentity(identity);
    const now = this.#clock.now();
    let e = this.#entries.get(key);
    if (e) {
      if (e.cert && e.cert.notAfter.getTime() > now) return Promise.resolve(e.cert);
      if (e.state === 'Unavailable') return Promise.reject(e.error);
      // Initializing, or a certificate that expired before its retry came: wait for the fetch,
      // bringing it forward if it is not running yet.
      if (!e.fetching && (!this.#ready.has(e) || RANK[priority] > RANK[e.priority])) {
        this.#makeDue(e, priority, now);
      }
    } else {
      e = {
        key,
        identity,
        state: 'Initializing',
        cert: undefined,
        error: undefined,
        priority,
        dueAt: now,
        fetching: false,
        cancelTimer: undefined,
        waiters: [],
        backoff: undefined,
      };
      this.#entries.set(key, e);
      this.#makeDue(e, priority, now);
    }
    const entry = e;
    return new Promise((resolve, reject) => {
      entry.waiters.push({ resolve, reject });
    });
  }

  /** Starts fetching at `warmup` priority without waiting (a new identity appeared on the node). */
  prefetch(identity: Identity): void {
    this.fetch(identity, 'warmup').catch(() => {
      // Logged and retried by the manager; a prefetch has no caller to tell.
    });
  }

  /** The valid certificate of `identity` now, without fetching. */
  get(identity: Identity): WorkloadCertificate | undefined {
    const cert = this.#entries.get(formatIdentity(identity))?.cert;
    return cert && cert.notAfter.getTime() > this.#clock.now() ? cert : undefined;
  }

  /** The state of `identity`, or undefined when it is not managed. */
  state(identity: Identity): CertState | undefined {
    const e = this.#entries.get(formatIdentity(identity));
    if (!e) return undefined;
    if (e.state === 'Available' && !this.get(identity)) return 'Unavailable';
    return e.state;
  }

  /** Managed identities. */
  identities(): Identity[] {
    return [...this.#entries.values()].map((e) => e.identity);
  }

  /**
   * Stops managing `identity` (the last workload with it left the node): its refresh is cancelled,
   * callers still waiting are rejected, and a fetch in flight is discarded when it returns.
   */
  forget(identity: Identity): void {
    const key = formatIdentity(identity);
    const e = this.#entries.get(key);
    if (!e) return;
    this.#entries.delete(key);
    this.#ready.delete(e);
    e.cancelTimer?.();
    e.cancelTimer = undefined;
    this.#settle(e, new CaError('CERTIFICATE_FORGOTTEN', `${key} was forgotten while a caller waited`));
  }

  /** The `certificates` section of `/config_dump`, sorted by identity. */
  toJSON(): CertsDump[] {
    const out: CertsDump[] = [];
    for (const e of this.#entries.values()) {
      const state = this.state(e.identity);
      const cert = e.cert;
      if (state === 'Available' && cert) {
        out.push({
          identity: e.key,
          state: 'Available',
          rootCerts: dumpPem(cert.rootsPem),
          certChain: dumpPem(cert.certChainPem),
        });
      } else {
        const error = e.error ?? (cert ? new CaError('CA_CERT_EXPIRED', 'certificate expired') : undefined);
        out.push({
          identity: e.key,
          state: state === 'Unavailable' ? `Unavailable: ${errorMessage(error)}` : 'Initializing',
          rootCerts: [],
          certChain: [],
        });
      }
    }
    return out.sort((a, b) => (a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0));
  }

  /** Queues a fetch of `e` that is due now. */
  #makeDue(e: Entry, priority: CertPriority, at: number): void {
    e.cancelTimer?.();
    e.cancelTimer = undefined;
    if (!this.#ready.has(e) || RANK[priority] > RANK[e.priority]) e.priority = priority;
    if (!this.#ready.has(e)) e.dueAt = at;
    this.#ready.add(e);
    this.#pump();
  }

  /** Schedules a background fetch of `e` at `at`. */
  #schedule(e: Entry, at: number): void {
    e.cancelTimer?.();
    const delay = at - this.#clock.now();
    if (delay <= 0) {
      this.#makeDue(e, 'background', at);
      return;
    }
    e.cancelTimer = this.#clock.setTimer(delay, () => {
      e.cancelTimer = undefined;
      if (this.#entries.get(e.key) === e && !this.#stopped) this.#makeDue(e, 'background', at);
    });
  }

  /** Starts the most urgent due fetches while there is room. */
  #pump(): void {
    while (!this.#stopped && this.#inFlight < this.#concurrency && this.#ready.size > 0) {
      let best: Entry | undefined;
      for (const e of this.#ready) {
        if (
          !best ||
          RANK[e.priority] > RANK[best.priority] ||
          (RANK[e.priority] === RANK[best.priority] && e.dueAt < best.dueAt)
        ) {
          best = e;
        }
      }
      if (!best) return;
      this.#ready.delete(best);
      this.#start(best);
    }
  }

  #start(e: Entry): void {
    e.fetching = true;
    this.#inFlight++;
    let result: Promise<WorkloadCertificate>;
    try {
      result = this.#client.fetchCertificate(e.identity);
    } catch (err) {
      result = Promise.reject(err);
    }
    result
      .then(
        (cert) => this.#onSuccess(e, cert),
        (err: unknown) => this.#onFailure(e, err),
      )
      .finally(() => {
        e.fetching = false;
        this.#inFlight--;
        this.#pump();
      });
  }

  #current(e: Entry): boolean {
    return !this.#stopped && this.#entries.get(e.key) === e;
  }

  #onSuccess(e: Entry, cert: WorkloadCertificate): void {
    if (!this.#current(e)) return;
    const previous = e.cert;
    e.cert = cert;
    e.error = undefined;
    e.state = 'Available';
    e.backoff = undefined;
    const now = this.#clock.now();
    const refreshAt = refreshTime(cert, now);
    this.#schedule(e, refreshAt);
    this.#log.info(
      {
        identity: e.key,
        serial: cert.serialNumber,
        notAfter: cert.notAfter.toISOString(),
        refreshInMs: refreshAt - now,
        rotated: previous !== undefined,
      },
      previous ? 'certificate rotated' : 'certificate issued',
    );
    this.#settle(e, undefined);
    this.emit('rotated', { identity: e.identity, certificate: cert, previous });
  }

  #onFailure(e: Entry, err: unknown): void {
    if (!this.#current(e)) return;
    e.backoff ??= new ExponentialBackoff(this.#backoffOptions);
    const retryInMs = e.backoff.next();
    const now = this.#clock.now();
    const valid = e.cert && e.cert.notAfter.getTime() > now ? e.cert : undefined;
    if (valid) {
      const retryAt = Math.min(now + retryInMs, valid.notAfter.getTime());
      this.#schedule(e, retryAt);
      this.#log.warn(
        {
          identity: e.key,
          err: errorMessage(err),
          retryInMs: retryAt - now,
          expires: valid.notAfter.toISOString(),
        },
        'certificate renewal failed; keeping the current certificate until it expires',
      );
      this.#settle(e, undefined);
      this.emit('failed', { identity: e.identity, error: err, retryInMs: retryAt - now, retained: true });
      return;
    }
    e.cert = undefined;
    e.error = err;
    e.state = 'Unavailable';
    this.#schedule(e, now + retryInMs);
    this.#log.warn(
      { identity: e.key, err: errorMessage(err), retryInMs, attempt: e.backoff.attempts },
      'certificate fetch failed and no valid certificate is held',
    );
    this.#settle(e, err);
    this.emit('failed', { identity: e.identity, error: err, retryInMs, retained: false });
  }

  /** Resolves the waiters with the valid certificate, or rejects them with `err`. */
  #settle(e: Entry, err: unknown): void {
    const waiters = e.waiters;
    if (waiters.length === 0) return;
    e.waiters = [];
    const cert = err === undefined ? e.cert : undefined;
    for (const w of waiters) {
      if (cert) w.resolve(cert);
      else w.reject(err ?? new CaError('CA_CERT_EXPIRED', `no valid certificate for ${e.key}`));
    }
  }
}

/** When to renew `cert`: its half-life, or half of what is left when that has already passed. */
function refreshTime(cert: WorkloadCertificate, now: number): number {
  const halfLife = cert.refreshAt.getTime();
  if (halfLife > now) return halfLife;
  const remaining = cert.notAfter.getTime() - now;
  return now + Math.max(CERT_MANAGER_DEFAULTS.minRefreshMs, Math.floor(remaining / 2));
}

function rfc3339Seconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function dumpPem(bundle: string): CertDump[] {
  const blocks = bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? [];
  return blocks.map((pem) => {
    const c = new X509Certificate(pem);
    return {
      pem: Buffer.from(pem).toString('base64'),
      serialNumber: BigInt(`0x${c.serialNumber}`).toString(10),
      validFrom: rfc3339Seconds(c.validFromDate),
      expirationTime: rfc3339Seconds(c.validToDate),
    };
  });
}
