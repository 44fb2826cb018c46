import type { ProxyState, Workload, WorkloadInfo } from '@ambient/common/model';
import { ProxyError } from './errors.ts';

/**
 * The pod a proxy serves, as ZDS named it (ztunnel `LocalWorkloadInformation`). Identity always
 * comes from here, never from a packet: the proxy's listeners live in this pod's network
 * namespace, so whatever they accept is this pod's traffic (outbound) or for this pod (inbound).
 * The Workload itself comes from WDS and is looked up afresh each time, since pushes replace it.
 */
export class LocalWorkload {
  readonly info: WorkloadInfo;
  readonly #state: ProxyState;
  readonly #waitTimeoutMs: number;

  constructor(state: ProxyState, info: WorkloadInfo, waitTimeoutMs: number) {
    this.#state = state;
    this.info = Object.freeze({ ...info });
    this.#waitTimeoutMs = waitTimeoutMs;
  }

  /** The pod's Workload now, if WDS has it (matched by name, namespace, SA on this node). */
  current(): Workload | undefined {
    return this.#state.findWorkloadByInfo(this.info);
  }

  /**
   * The pod's Workload, waiting for WDS up to the configured time: ZDS can announce a pod before
   * istiod has pushed it. Fails with `UNKNOWN_SOURCE`.
   */
  async get(signal?: AbortSignal): Promise<Workload> {
    const found = await this.#state.waitForWorkload(this.info, {
      timeoutMs: this.#waitTimeoutMs,
      ...(signal === undefined ? {} : { signal }),
    });
    if (found !== undefined) return found;
    if (signal?.aborted && signal.reason instanceof ProxyError) throw signal.reason;
    throw new ProxyError(
      'UNKNOWN_SOURCE',
      `unknown source: workload ${this.describe()} is not in WDS${
        this.#state.localNode === undefined ? '' : ` for node ${this.#state.localNode}`
      } after ${this.#waitTimeoutMs} ms`,
      { retryable: true },
    );
  }

  /** `namespace/name (sa serviceAccount)`, for logs. */
  describe(): string {
    return `${this.info.namespace}/${this.info.name} (sa ${this.info.serviceAccount})`;
  }
}
