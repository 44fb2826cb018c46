/**
 * Server half of `npm run bench:hbone`, run as a child process so the client and server each get
 * their own event loop (and core). It serves the same endpoint for both variants, with the same
 * certificate and TLS settings: a plain TLS 1.3 server and an HBONE server. Each connection or
 * tunnel starts with a 16-byte request: `U` (the client uploads until it ends; answered with the
 * byte count and mean read size) or `D<bytes>` (the server sends that many bytes and ends).
 * The parent asks for this process's CPU time over IPC around every run.
 */
import * as tls from 'node:tls';
import { HboneServer } from '../src/hbone/server.ts';
import type { HboneSettings } from '../src/hbone/settings.ts';
import { hboneServerTlsOptions, type TlsCredentials } from '../src/tls/secure-context.ts';

export const REQUEST_BYTES = 16;

interface Start {
  readonly credentials: TlsCredentials;
  readonly settings: Partial<HboneSettings>;
  readonly chunk: number;
  readonly block: number;
}

let block = Buffer.alloc(0);
let chunkSize = 0;

async function send(stream: NodeJS.WritableStream, total: number): Promise<void> {
  let sent = 0;
  while (sent < total) {
    const off = sent % block.length;
    const n = Math.min(chunkSize, total - sent, block.length - off);
    sent += n;
    if (!stream.write(block.subarray(off, off + n))) {
      await new Promise((resolve) => stream.once('drain', resolve));
    }
  }
  stream.end();
}

function serve(stream: NodeJS.ReadableStream & NodeJS.WritableStream): void {
  stream.on('error', () => {});
  let head = Buffer.alloc(0);
  let uploading = false;
  let bytes = 0;
  let reads = 0;
  stream.on('data', (chunk: Buffer) => {
    if (uploading) {
      bytes += chunk.length;
      reads++;
      return;
    }
    head = Buffer.concat([head, chunk]);
    if (head.length < REQUEST_BYTES) return;
    const request = head.subarray(0, REQUEST_BYTES).toString('latin1');
    if (request[0] === 'D') {
      void send(stream, Number(request.slice(1)));
      return;
    }
    uploading = true;
    bytes = head.length - REQUEST_BYTES;
  });
  stream.on('end', () => {
    if (uploading) stream.end(`${bytes} ${Math.round(bytes / Math.max(reads, 1))}\n`);
  });
}

process.once('message', async (msg: Start) => {
  chunkSize = msg.chunk;
  block = Buffer.allocUnsafe(msg.block);
  for (let i = 0; i + 4 <= block.length; i += 4) block.writeUInt32LE((i * 2654435761) >>> 0, i);
  const plain = tls.createServer(hboneServerTlsOptions(msg.credentials), (socket) => {
    socket.setNoDelay(true);
    serve(socket);
  });
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
  const hbone = new HboneServer({
    credentials: msg.credentials,
    settings: msg.settings,
    handler: (request) => serve(request.accept()),
  });
  const { port: hbonePort } = await hbone.listen({ port: 0, host: '127.0.0.1' });
  const { port: tlsPort } = plain.address() as { port: number };
  process.on('message', () => process.send?.({ cpu: process.cpuUsage() }));
  process.send?.({ tlsPort, hbonePort });
  process.once('disconnect', () => {
    hbone.destroy();
    plain.close();
    process.exit(0);
  });
});
