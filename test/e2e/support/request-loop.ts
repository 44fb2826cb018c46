/**
 * A request loop run inside a pod (`mesh.exec`) while the e2e suites change the mesh under it:
 * one HTTP GET at a time, each on a new connection (so each one is routed, load balanced and
 * authorized anew), until the stop file exists or the time is up. One JSON line per request, with
 * wall-clock times so the test can place each request against what it did meanwhile (a pod
 * deleted, a ztunnel restarted):
 *
 *   {"i":0,"start":1732400000000,"end":1732400000004,"ok":true,"pod":"echo-…"}
 *   {"i":1,"start":…,"end":…,"ok":false,"error":"connect ECONNREFUSED …"}
 *
 *   node request-loop.ts --url http://10.96.0.10/ --stop-file /tmp/x [--interval-ms 20]
 *     [--timeout-ms 2000] [--max-ms 120000]
 *
 * With `--keep-alive`, every request goes over one connection instead (an existing connection
 * across a restart); a line then says `"reused":true` when the socket was the previous one.
 * Node built-ins and the samples' GET only: it runs on the mesh's Node in any pod.
 */
import { existsSync } from 'node:fs';
import { Agent } from 'node:http';
import type { Socket } from 'node:net';
import { type EchoAnswer, getEcho } from '../../../ambientctl/src/samples/echo-request.ts';

function flag(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i === -1 ? fallback : process.argv[i + 1];
  if (v === undefined) {
    process.stderr.write(`request-loop: --${name} is required\n`);
    process.exit(2);
  }
  return v;
}

const url = flag('url');
const stopFile = flag('stop-file');
const intervalMs = Number(flag('interval-ms', '20'));
const timeoutMs = Number(flag('timeout-ms', '2000'));
const maxMs = Number(flag('max-ms', '120000'));
const keepAlive = process.argv.includes('--keep-alive');
const agent = keepAlive ? new Agent({ keepAlive: true, maxSockets: 1 }) : undefined;
let lastSocket: Socket | undefined;

function get(): Promise<EchoAnswer & { readonly reused?: boolean }> {
  let reused: boolean | undefined;
  const onSocket = (sock: Socket): void => {
    reused = sock === lastSocket;
    lastSocket = sock;
  };
  return getEcho(url, { timeoutMs, ...(agent ? { agent, onSocket } : {}) }).then((a) =>
    reused === undefined ? a : { ...a, reused },
  );
}

const began = Date.now();
let failures = 0;
for (let i = 0; !existsSync(stopFile) && Date.now() - began < maxMs; i++) {
  const start = Date.now();
  const outcome = await get();
  if (!outcome.ok) failures++;
  process.stdout.write(`${JSON.stringify({ i, start, end: Date.now(), ...outcome })}\n`);
  if (intervalMs > 0) await new Promise((r) => setTimeout(r, intervalMs));
}
agent?.destroy();
process.exit(failures === 0 ? 0 : 1);
