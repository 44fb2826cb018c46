/**
 * The `ambient/client` sample image. Without arguments it stays up doing nothing, as a client pod
 * that traffic is started from with `ambientctl exec` (curl, or this program with `--url`). With
 * `--url` it sends requests and prints one JSON line per request, then exits 0 when every request
 * got a 2xx answer and 1 otherwise:
 *
 *   node client.ts --url http://10.96.0.10/ [--count 1] [--interval-ms 0] [--timeout-ms 3000]
 *
 * Each line: `{"i":0,"ok":true,"status":200,"pod":"echo-…","ms":4}`, or `{"i":0,"ok":false,"error":"…"}`.
 * `pod` is the echo server's pod name when the answer is the echo sample's JSON.
 */
import { getEcho } from './echo-request.ts';

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? undefined : process.argv[i + 1];
}

async function get(url: string, i: number, timeoutMs: number): Promise<Record<string, unknown>> {
  const started = Date.now();
  const answer = await getEcho(url, { timeoutMs });
  return { i, ...answer, ms: Date.now() - started };
}

const url = flag('url');
if (url === undefined) {
  process.stdout.write(`${new Date().toISOString()} client ready; start traffic with ambientctl exec\n`);
  const idle = setInterval(() => {}, 1 << 30);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      clearInterval(idle);
      process.exit(0);
    });
  }
} else {
  const count = Number(flag('count') ?? '1');
  const intervalMs = Number(flag('interval-ms') ?? '0');
  const timeoutMs = Number(flag('timeout-ms') ?? '3000');
  let failures = 0;
  for (let i = 0; i < count; i++) {
    const outcome = await get(url, i, timeoutMs);
    if (outcome.ok !== true) failures++;
    process.stdout.write(`${JSON.stringify(outcome)}\n`);
    if (intervalMs > 0 && i + 1 < count) await new Promise((r) => setTimeout(r, intervalMs));
  }
  process.exit(failures === 0 ? 0 : 1);
}
