import { type Agent, request } from 'node:http';
import type { Socket } from 'node:net';

/** One GET as the sample clients report it. */
export interface EchoAnswer {
  readonly ok: boolean;
  readonly status?: number;
  /** The answering pod, when the answer is the echo sample's JSON. */
  readonly pod?: string;
  readonly error?: string;
}

/**
 * One HTTP GET that never rejects: a 2xx is `ok`, and the echo sample's `pod` is read from the
 * body. Without `agent` each request has its own connection (routed and authorized anew).
 */
export function getEcho(
  url: string,
  options: { readonly timeoutMs: number; readonly agent?: Agent; readonly onSocket?: (s: Socket) => void },
): Promise<EchoAnswer> {
  return new Promise((resolve) => {
    const req = request(url, { agent: options.agent ?? false, timeout: options.timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => {
        let pod: string | undefined;
        try {
          const parsed = JSON.parse(body) as { pod?: unknown };
          if (typeof parsed.pod === 'string') pod = parsed.pod;
        } catch {
          // Not the echo sample: the status is the answer.
        }
        const status = res.statusCode ?? 0;
        const ok = status >= 200 && status < 300;
        resolve({
          ok,
          status,
          ...(pod === undefined ? {} : { pod }),
          ...(ok ? {} : { error: `status ${status}` }),
        });
      });
      res.on('error', (err) => resolve({ ok: false, error: err.message }));
    });
    if (options.onSocket) req.on('socket', options.onSocket);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${options.timeoutMs} ms`)));
    req.on('error', (err) => resolve({ ok: false, error: err.message }));
    req.end();
  });
}
