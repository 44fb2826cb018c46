// Started by native.test.ts in the ROOT network namespace (not in a pod): receives a pod's netns fd
// over SEQPACKET, then makes sockets in that namespace through the addon and reports, one JSON line
// per step on stdout, what the kernel says about them.
//
//   node --conditions=@ambient/source netns-fd-child.ts <socket path> <pod A ip> <pod B ip> <pod B port>
//
// stdout: {"event":"received","fds":1,"isNetns":true,"inode":…,"home":…,"rootBind":"EADDRNOTAVAIL"}
//         {"event":"listening","address":"<pod A ip>","port":…}
//         {"event":"upstream","localAddress":"<pod A ip>","reply":"<pod B's JSON line>"}
//         {"event":"accepted","remoteAddress":…}   (once a client has connected to the listener)
import { once } from 'node:events';
import { createServer } from 'node:net';
import {
  closeFd,
  connectInNetns,
  createListenerFd,
  currentNetnsInode,
  isNetns,
  listenInNetns,
  NativeError,
  netnsInode,
  SeqpacketSocket,
} from '@ambient/native';

const [path, podAIp, podBIp, podBPort] = process.argv.slice(2);
if (!path || !podAIp || !podBIp || !podBPort) {
  throw new Error('usage: netns-fd-child.ts <socket path> <pod A ip> <pod B ip> <pod B port>');
}
const emit = (event: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(event)}\n`);
};
// Bounded: a test that never connects must not leave this process behind.
const deadline = setTimeout(() => {
  process.stderr.write('netns-fd-child: no client within 15 s\n');
  process.exit(1);
}, 15_000);

const control = SeqpacketSocket.connect(path, { maxMessageSize: 1024, maxFds: 1 });
const [, fds] = (await once(control, 'message')) as [Buffer, number[]];
const fd = fds[0];
if (fd === undefined || fds.length !== 1) throw new Error(`expected exactly one fd, got ${fds.length}`);

/** The errno of binding pod A's IP here, in the root netns: it must not be a local address. */
function rootBindOutcome(): string {
  try {
    const probe = createListenerFd({ address: podAIp as string, port: 0, transparent: 'off' });
    closeFd(probe.fd);
    return 'bound';
  } catch (err) {
    if (err instanceof NativeError) return err.code;
    throw err;
  }
}

emit({
  event: 'received',
  fds: fds.length,
  isNetns: isNetns(fd),
  inode: netnsInode(fd),
  home: currentNetnsInode(),
  rootBind: rootBindOutcome(),
});

let accepted: (remoteAddress: string | undefined) => void = () => {};
const firstClient = new Promise<string | undefined>((resolve) => {
  accepted = resolve;
});
const server = createServer((s) => {
  const remoteAddress = s.remoteAddress;
  s.on('error', () => {});
  // Drain what the client sent: an unread stream never sees the FIN, so it would never close.
  s.resume();
  s.end(`${JSON.stringify({ marker: 'root-netns-child', pid: process.pid, remoteAddress })}\n`);
  accepted(remoteAddress);
});
// transparent 'off': with IP_TRANSPARENT a bind to a non-local address would succeed anywhere,
// which would prove nothing about the namespace.
const bound = await listenInNetns(server, { netnsFd: fd, address: podAIp, port: 0, transparent: 'off' });
emit({ event: 'listening', address: bound.address, port: bound.port });

const upstream = await connectInNetns({
  netnsFd: fd,
  address: podBIp,
  port: Number(podBPort),
  timeoutMs: 5000,
});
const localAddress = upstream.localAddress;
upstream.setEncoding('utf8');
let reply = '';
upstream.on('data', (c: string) => {
  reply += c;
});
upstream.end('from the root-netns child');
await once(upstream, 'end');
upstream.destroy();
emit({ event: 'upstream', localAddress, reply: reply.trim() });

emit({ event: 'accepted', remoteAddress: await firstClient });
clearTimeout(deadline);
await new Promise<void>((resolve) => server.close(() => resolve()));
closeFd(fd);
control.close();
