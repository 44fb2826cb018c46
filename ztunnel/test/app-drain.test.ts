/**
 * Reliability checklist 31, drain and forced drain, on the real binary: `ztunnel proxy` runs as a
 * child process (local-config mode), a node agent in this test enrolls a pod over ZDS, the pod's
 * nftables NAT rule redirects its connection to the proxy's 15001, and SIGTERM stops ztunnel.
 * Listeners must close at once; ztunnel must exit (a) as soon as the connection closes, (b) at the
 * drain deadline when it stays open, closing it. Needs root.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer, type Server, Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ZdsServer } from '@ambient/common/zds';
import { closeFd, connectFd, listenInNetns } from '@ambient/native';
import {
  CapturedLogs,
  eventually,
  http,
  ip,
  isRoot,
  PodNetns,
  sweepLeftoverNetns,
  tempDir,
} from './app-fixtures.ts';

const NODE = 'node-a';
const POD_IP = '10.78.0.10';
const APP_IP = '10.78.0.20';
const APP_PORT = 8080;
const DEADLINE_MS = 3000;
const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const NODE_BIN = process.execPath;

const LOCAL_CONFIG = `workloads:
  - uid: Kubernetes//Pod/demo/client-1
    name: client-1
    namespace: demo
    serviceAccount: client
    addresses: ["${POD_IP}"]
    node: ${NODE}
    tunnelProtocol: HBONE
`;

interface Child {
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; at: number }>;
  readonly ports: Promise<{ readiness: number; stats: number; admin: number }>;
  readonly output: string[];
}

/** Starts `ztunnel proxy` with `env`; resolves its ports from the "ztunnel started" log line. */
function startZtunnel(env: Record<string, string>): Child {
  const proc = spawn(NODE_BIN, ['--conditions=@ambient/source', MAIN, 'proxy'], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  let buffered = '';
  let resolvePorts: (p: { readiness: number; stats: number; admin: number }) => void = () => {};
  const ports = new Promise<{ readiness: number; stats: number; admin: number }>((resolve) => {
    resolvePorts = resolve;
  });
  proc.stdout?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    let nl = buffered.indexOf('\n');
    while (nl >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      output.push(line);
      try {
        const rec = JSON.parse(line) as {
          msg?: string;
          ports?: { readiness: number; stats: number; admin: number };
        };
        if (rec.msg === 'ztunnel started' && rec.ports) resolvePorts(rec.ports);
      } catch {
        // Not JSON: kept in output for the failure message.
      }
      nl = buffered.indexOf('\n');
    }
  });
  proc.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString('utf8')));
  const exited = once(proc, 'exit').then(([code]) => ({ code: code as number | null, at: Date.now() }));
  return { proc, exited, ports, output };
}

/** The pod's NAT rule: its connections to the app go to the proxy's 15001, ztunnel's own (mark 0x539) do not. */
function redirectRules(pod: PodNetns): void {
  execFileSync('ip', ['netns', 'exec', pod.name, 'nft', '-f', '-'], {
    input: `table ip ztapp {
  chain output {
    type nat hook output priority -100;
    meta mark 0x539 return
    ip daddr ${APP_IP} tcp dport ${APP_PORT} redirect to :15001
  }
}
`,
    timeout: 10_000,
  });
}

/** Opens the pod app's connection to the app (from inside the pod netns, unmarked: redirected). */
async function podConnection(pod: PodNetns): Promise<Socket> {
  const netnsFd = pod.fd();
  try {
    const fd = await connectFd({ netnsFd, address: APP_IP, port: APP_PORT, timeoutMs: 3000 });
    return new Socket({ fd, readable: true, writable: true });
  } finally {
    closeFd(netnsFd);
  }
}

async function roundTrip(socket: Socket, text: string): Promise<string> {
  socket.write(text);
  const [data] = (await once(socket, 'data')) as [Buffer];
  return data.toString('utf8');
}

describe('ztunnel drain on SIGTERM (checklist 31)', { skip: !isRoot && 'needs root' }, () => {
  const logs = new CapturedLogs('warn');
  const cases: {
    tmp: ReturnType<typeof tempDir>;
    pod: PodNetns;
    agent: ZdsServer;
    app: Server;
    child?: Child;
  }[] = [];

  before(() => sweepLeftoverNetns());

  after(async () => {
    for (const c of cases) {
      if (c.child && c.child.proc.exitCode === null) c.child.proc.kill('SIGKILL');
      await c.agent.stop();
      c.app.close();
      c.pod.delete();
      c.tmp.remove();
    }
  });

  /** A pod with the redirect rule, an echo app inside it, a node agent, and ztunnel enrolling it. */
  async function setup(): Promise<{ pod: PodNetns; child: Child; stats: number }> {
    const tmp = tempDir('drain');
    const pod = new PodNetns(POD_IP);
    ip(['-n', pod.name, 'addr', 'add', `${APP_IP}/32`, 'dev', 'lo']);
    redirectRules(pod);
    const app = createServer({ allowHalfOpen: false }, (s) => s.pipe(s));
    const fd = pod.fd();
    try {
      await listenInNetns(app, { netnsFd: fd, address: APP_IP, port: APP_PORT, reusePort: false });
    } finally {
      closeFd(fd);
    }
    const sock = tmp.path('ztunnel.sock');
    const agent = new ZdsServer({
      path: sock,
      snapshot: () => [
        {
          uid: 'client-1-uid',
          info: { name: 'client-1', namespace: 'demo', serviceAccount: 'client' },
          netns: pod.path,
        },
      ],
      log: logs.logging.logger('agent'),
    });
    const c: (typeof cases)[number] = { tmp, pod, agent, app };
    cases.push(c);
    agent.start();
    writeFileSync(tmp.path('local.yaml'), LOCAL_CONFIG);
    const child = startZtunnel({
      LOCAL_XDS_PATH: tmp.path('local.yaml'),
      CA_ADDRESS: '',
      NODE_NAME: NODE,
      INPOD_UDS: sock,
      ADMIN_PORT: '0',
      STATS_BIND_ADDRESS: '127.0.0.1',
      STATS_PORT: '0',
      READINESS_BIND_ADDRESS: '127.0.0.1',
      READINESS_PORT: '0',
      CONNECTION_TERMINATION_DEADLINE: `${DEADLINE_MS}ms`,
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'info',
    });
    c.child = child;
    const ports = await Promise.race([
      child.ports,
      child.exited.then(({ code }) =>
        assert.fail(`ztunnel exited with ${code}:\n${child.output.join('\n')}`),
      ),
    ]);
    await eventually(
      'ztunnel ready with the pod enrolled',
      async () => (await http(ports.readiness, '/healthz/ready')).status === 200,
      10_000,
    );
    await eventually('pod listeners up', () => pod.listening(15001));
    return { pod, child, stats: ports.stats };
  }

  async function proxiedConnection(pod: PodNetns, stats: number): Promise<Socket> {
    const conn = await podConnection(pod);
    assert.equal(await roundTrip(conn, 'ping'), 'ping', 'the app echoes through the proxy');
    const metrics = (await http(stats, '/metrics')).text;
    assert.match(
      metrics,
      /istio_tcp_connections_opened_total\{[^}]*reporter="source"[^}]*\} 1/,
      'the connection went through ztunnel',
    );
    return conn;
  }

  it('(a) closes listeners at once and exits as soon as the last connection closes', async () => {
    const { pod, child, stats } = await setup();
    const conn = await proxiedConnection(pod, stats);
    const signalledAt = Date.now();
    child.proc.kill('SIGTERM');
    await eventually('listeners closed', async () => !(await pod.listening(15001)), 1000);
    assert.ok(Date.now() - signalledAt < 1000, 'listeners closed well before the deadline');
    assert.equal(await roundTrip(conn, 'still'), 'still', 'the open connection keeps working while draining');
    assert.equal(child.proc.exitCode, null, 'ztunnel waits for the connection');
    await new Promise((r) => setTimeout(r, 300));
    conn.end();
    const { code, at } = await child.exited;
    assert.equal(code, 0, child.output.join('\n'));
    assert.ok(
      at - signalledAt < DEADLINE_MS - 500,
      `exited ${at - signalledAt} ms after SIGTERM, before the deadline`,
    );
  });

  it('(b) closes a connection still open at the deadline and exits then', async () => {
    const { pod, child, stats } = await setup();
    const conn = await proxiedConnection(pod, stats);
    const closed = once(conn, 'close').then(() => Date.now());
    conn.on('error', () => {});
    const signalledAt = Date.now();
    child.proc.kill('SIGTERM');
    await eventually('listeners closed', async () => !(await pod.listening(15001)), 1000);
    const { code, at } = await child.exited;
    assert.equal(code, 0, child.output.join('\n'));
    const elapsed = at - signalledAt;
    assert.ok(elapsed >= DEADLINE_MS - 100, `waited for the deadline (${elapsed} ms)`);
    assert.ok(elapsed < DEADLINE_MS + 3000, `exited soon after the deadline (${elapsed} ms)`);
    const closedAt = await closed;
    assert.ok(
      closedAt - signalledAt >= DEADLINE_MS - 100,
      'the connection was closed at the deadline, not before',
    );
  });
});
