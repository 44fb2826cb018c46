import type { Server, Socket } from 'node:net';

/**
 * The connections a `net.Server` accepts, in order, for a test to take one at a time. A test that
 * must prove a connection did NOT arrive reads {@link AcceptQueue.count} after the fact.
 */
export class AcceptQueue {
  readonly #ready: Socket[] = [];
  readonly #waiters: ((s: Socket) => void)[] = [];
  #count = 0;

  constructor(server: Server) {
    server.on('connection', (socket: Socket) => {
      this.#count += 1;
      // A socket reset while queued must not become an uncaught error; its reader sees the close.
      socket.on('error', () => {});
      const waiter = this.#waiters.shift();
      if (waiter !== undefined) waiter(socket);
      else this.#ready.push(socket);
    });
  }

  /** How many connections the server has accepted so far. */
  get count(): number {
    return this.#count;
  }

  /** The next accepted connection; rejects after `timeoutMs` naming `what` was awaited. */
  next(what: string, timeoutMs = 5000): Promise<Socket> {
    const ready = this.#ready.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const waiter = (s: Socket): void => {
        clearTimeout(timer);
        resolve(s);
      };
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(new Error(`no connection accepted within ${timeoutMs} ms: ${what}`));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /** Destroys every connection still queued. */
  destroyQueued(): void {
    for (const s of this.#ready.splice(0)) s.destroy();
  }
}
