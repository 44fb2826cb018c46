// A stand-in for ztunnel's in-pod data path, for the redirection tests and bench. Run it on a node
// (node.spawnNode): like ztunnel it lives outside the pods, creates its listeners inside each
// pod's netns with mark 0x539, and recovers original destinations with the same call in both
// redirection modes. It proxies plaintext (no HBONE): 15001 → the original destination, 15006 →
// the app with the original client address as source (IP_TRANSPARENT), 15008 → answers
// `hbone-standin` itself.
//
// stdin, one JSON command a line:
//   {"op":"add","uid":…,"netns":…,"pinDir"?:…}   listeners for a pod (+ register 15006 in eBPF mode)
//   {"op":"register","uid":…,"pinDir":…}          register the pod's 15006 listener again
//   {"op":"remove","uid":…}                        close the pod's listeners
//   {"op":"dial","id":…,"uid":…,"address":…,"port":…,"message":…}  a marked connection from the pod netns
// stdout, one JSON event a line: ready, added, registered, removed, accepted, upstream, dialed, error.
// With --quiet, accepted/upstream events are not printed (bench).
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { closeFd, connectInNetns, createListenerFd, openNetns } from '@ambient/native';
import { originalDestination, registerInboundListener } from '../src/redirect/index.ts';

const MARK = 0x539;
const OUTBOUND = 15001;
const INBOUND = 15006;
const HBONE = 15008;
const ILLEGAL = new Set([OUTBOUND, INBOUND, HBONE]);
const quiet = process.argv.includes('--quiet');

interface PodEntry {
  netnsFd: number;
  servers: Server[];
  inboundFd: number;
}
const pods = new Map<string, PodEntry>();

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function pipeBoth(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const close = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', close);
  b.on('error', close);
  a.on('close', () => b.end());
  b.on('close', () => a.end());
}

async function onConnection(uid: string, listener: number, pod: PodEntry, socket: Socket): Promise<void> {
  socket.on('error', () => socket.destroy());
  const peer = { address: socket.remoteAddress, port: socket.remotePort };
  const local = { address: socket.localAddress, port: socket.localPort };
  let orig: ReturnType<typeof originalDestination>;
  try {
    orig = originalDestination(socket);
  } catch (err) {
    emit({ event: 'error', uid, listener, message: (err as Error).message });
    socket.destroy();
    return;
  }
  if (!quiet) emit({ event: 'accepted', uid, listener, orig, peer, local });
  if (listener === HBONE) {
    socket.end('hbone-standin\n');
    return;
  }
  if (ILLEGAL.has(orig.port)) {
    emit({ event: 'error', uid, listener, message: `refusing loop to ${orig.address}:${orig.port}` });
    socket.destroy();
    return;
  }
  socket.pause();
  try {
    const upstream = await connectInNetns({
      netnsFd: pod.netnsFd,
      address: orig.address,
      port: orig.port,
      mark: MARK,
      timeoutMs: 5000,
      ...(listener === INBOUND && peer.address
        ? { source: { address: peer.address, transparent: true } }
        : {}),
    });
    upstream.setNoDelay(true);
    socket.setNoDelay(true);
    if (!quiet) {
      emit({
        event: 'upstream',
        uid,
        listener,
        local: { address: upstream.localAddress, port: upstream.localPort },
        peer,
      });
    }
    pipeBoth(socket, upstream);
    socket.resume();
  } catch (err) {
    emit({ event: 'error', uid, listener, message: (err as Error).message });
    socket.destroy();
  }
}

async function add(uid: string, netns: string, pinDir: string | undefined): Promise<void> {
  const netnsFd = openNetns(netns);
  const entry: PodEntry = { netnsFd, servers: [], inboundFd: -1 };
  pods.set(uid, entry);
  for (const port of [OUTBOUND, INBOUND, HBONE]) {
    const { fd } = createListenerFd({ netnsFd, address: '0.0.0.0', port, mark: MARK });
    if (port === INBOUND) {
      entry.inboundFd = fd;
      if (pinDir !== undefined) await registerInboundListener(pinDir, fd);
    }
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: false }, (s) => {
      void onConnection(uid, port, entry, s);
    });
    server.listen({ fd });
    await once(server, 'listening');
    entry.servers.push(server);
  }
  emit({ event: 'added', uid });
}

async function dial(cmd: Record<string, unknown>): Promise<void> {
  const pod = pods.get(String(cmd.uid));
  if (!pod) throw new Error(`unknown pod ${String(cmd.uid)}`);
  const socket = await connectInNetns({
    netnsFd: pod.netnsFd,
    address: String(cmd.address),
    port: Number(cmd.port),
    mark: MARK,
    timeoutMs: 5000,
  });
  const local = { address: socket.localAddress, port: socket.localPort };
  socket.end(String(cmd.message ?? ''));
  let received = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    received += d;
  });
  await once(socket, 'end');
  socket.destroy();
  emit({ event: 'dialed', id: cmd.id, local, received });
}

async function handle(cmd: Record<string, unknown>): Promise<void> {
  const uid = String(cmd.uid);
  switch (cmd.op) {
    case 'add':
      await add(uid, String(cmd.netns), typeof cmd.pinDir === 'string' ? cmd.pinDir : undefined);
      return;
    case 'register': {
      const pod = pods.get(uid);
      if (!pod) throw new Error(`unknown pod ${uid}`);
      await registerInboundListener(String(cmd.pinDir), pod.inboundFd);
      emit({ event: 'registered', uid });
      return;
    }
    case 'remove': {
      const pod = pods.get(uid);
      if (pod) {
        pods.delete(uid);
        await Promise.all(pod.servers.map((s) => new Promise((r) => s.close(r))));
        closeFd(pod.netnsFd);
      }
      emit({ event: 'removed', uid });
      return;
    }
    case 'dial':
      await dial(cmd);
      return;
    default:
      throw new Error(`unknown op ${String(cmd.op)}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (line.trim() === '') return;
  let cmd: Record<string, unknown>;
  try {
    cmd = JSON.parse(line) as Record<string, unknown>;
  } catch {
    emit({ event: 'error', message: `bad command ${line}` });
    return;
  }
  handle(cmd).catch((err: unknown) => {
    emit({ event: 'error', op: cmd.op, id: cmd.id, uid: cmd.uid, message: (err as Error).message });
  });
});
lines.on('close', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
emit({ event: 'ready', pid: process.pid });
