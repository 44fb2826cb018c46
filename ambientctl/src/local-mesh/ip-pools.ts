/**
 * Address allocation the local mesh does itself: Service ClusterIPs from the service CIDR (the
 * API server's job). Pod IPs come from host-local during CNI ADD, as in a cluster. Addresses
 * rotate so one just released is not handed out again while proxies may still know the old one.
 */

/** Kubernetes' usual default; the harness keeps pod CIDRs clear of it. */
export const SERVICE_CIDR = '10.96.0.0/16';

function toInt(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`${ip} is not an IPv4 address`);
  }
  return (
    (((parts[0] as number) << 24) |
      ((parts[1] as number) << 16) |
      ((parts[2] as number) << 8) |
      (parts[3] as number)) >>>
    0
  );
}

function toIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function parseCidr(cidr: string): { first: number; last: number } {
  const [ip, len] = cidr.split('/');
  const bits = Number(len);
  if (ip === undefined || !Number.isInteger(bits) || bits < 8 || bits > 30)
    throw new Error(`${cidr} is not an IPv4 CIDR of /8 to /30`);
  const size = 2 ** (32 - bits);
  const network = toInt(ip) - (toInt(ip) % size);
  return { first: network, last: network + size - 1 };
}

/** Hands out addresses of a range in rotation, skipping the ones in use. */
class RotatingPool {
  readonly #first: number;
  readonly #last: number;
  readonly #held = new Set<string>();
  #next: number;

  constructor(first: number, last: number) {
    this.#first = first;
    this.#last = last;
    this.#next = first;
  }

  /** The next free address after the previous one; `busy` are taken elsewhere too. */
  allocate(busy: ReadonlySet<string> = new Set()): string | undefined {
    const size = this.#last - this.#first + 1;
    for (let i = 0; i < size; i++) {
      const n = this.#next;
      this.#next = n >= this.#last ? this.#first : n + 1;
      const ip = toIp(n);
      if (!this.#held.has(ip) && !busy.has(ip)) {
        this.#held.add(ip);
        return ip;
      }
    }
    return undefined;
  }

  /** Takes a given address; false when it is outside the range or taken. */
  reserve(ip: string): boolean {
    let n: number;
    try {
      n = toInt(ip);
    } catch {
      return false;
    }
    if (n < this.#first || n > this.#last || this.#held.has(ip)) return false;
    this.#held.add(ip);
    return true;
  }

  release(ip: string): void {
    this.#held.delete(ip);
  }

  contains(ip: string): boolean {
    try {
      const n = toInt(ip);
      return n >= this.#first && n <= this.#last;
    } catch {
      return false;
    }
  }
}

/** ClusterIPs: the service CIDR from `.10` (`.1` is the kubernetes Service's in a cluster). */
export class ClusterIpPool extends RotatingPool {
  constructor(cidr = SERVICE_CIDR) {
    const { first, last } = parseCidr(cidr);
    super(first + 10, last - 1);
  }
}
