import assert from 'node:assert/strict';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import * as tls from 'node:tls';
import { causedBy } from '../errors.ts';
import { makeIdentity } from '../identity/identity.ts';
import {
  type HbonePki,
  hbonePki,
  type RunningHboneServer,
  readAll,
  startHboneServer,
} from '../testing/hbone-fixture.ts';
import { TestCa, tlsCredentials, VALIDITY } from '../testing/pki.ts';
import { TlsError } from '../tls/errors.ts';
import { hboneClientTlsOptions } from '../tls/secure-context.ts';
import { openTunnel } from './client.ts';
import { HboneError } from './errors.ts';
import { HboneServer } from './server.ts';

let pki: HbonePki;
let srv: RunningHboneServer;

before(async () => {
  pki = await hbonePki();
  srv = await startHboneServer(pki);
});
after(() => srv[Symbol.asyncDispose]());

async function until(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Expects the dial to fail and the server to have refused the connection with `code`. */
async function assertServerRejects(
  s: RunningHboneServer,
  dial: () => Promise<unknown>,
  code: TlsError['code'],
): Promise<void> {
  const before = s.rejections.length;
  const requests = s.requests.length;
  await assert.rejects(dial());
  await until(() => s.rejections.length > before, 'the server to report the rejection');
  const err = s.rejections[before];
  assert.ok(err instanceof TlsError);
  assert.equal(err.code, code, err.message);
  assert.equal(s.requests.length, requests, 'no request may reach the handler');
}

function isTlsError(code: TlsError['code']) {
  return (err: unknown) => causedBy(err, code) || (err instanceof TlsError && err.code === code);
}

/** A raw TLS attempt against the server; resolves with how it ended. */
function rawTls(
  options: tls.ConnectionOptions,
): Promise<{ secure: boolean; alpn: string | false; error?: Error }> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port: srv.port, ...options });
    let secure = false;
    let error: Error | undefined;
    socket.on('secureConnect', () => {
      secure = true;
    });
    socket.on('error', (e) => {
      error = e;
    });
    socket.on('close', () =>
      resolve({ secure, alpn: socket.alpnProtocol ?? false, ...(error ? { error } : {}) }),
    );
    socket.resume();
    setTimeout(() => socket.destroy(), 2000).unref();
  });
}

describe('HBONE mTLS', () => {
  it('establishes TLS 1.3 with AES-GCM, ALPN h2 and no SNI, and reports both identities', async () => {
    let sni: string | false | null | undefined;
    srv.server.once('session', (info) => {
      sni = info.socket.servername;
    });
    const conn = await srv.connect();
    try {
      assert.equal(conn.socket.getProtocol(), 'TLSv1.3');
      assert.match(conn.socket.getCipher().name, /^TLS_AES_(256|128)_GCM_SHA(384|256)$/);
      assert.equal(conn.socket.alpnProtocol, 'h2');
      assert.deepEqual(conn.peerIdentity, pki.serverIdentity);
      assert.equal(conn.socket.isSessionReused(), false);
      const tunnel = await openTunnel(conn.session, { target: '10.0.0.1:80' });
      tunnel.end('ping');
      assert.equal((await readAll(tunnel)).toString(), 'ping');
      assert.ok(!sni, `the client must not send SNI, server saw ${String(sni)}`);
      assert.deepEqual(srv.requests.at(-1)?.peerIdentity, pki.clientIdentity);
      assert.equal(srv.requests.at(-1)?.remoteAddress, '127.0.0.1');
      assert.equal(srv.requests.at(-1)?.localPort, srv.port);
    } finally {
      conn.session.destroy();
    }
  });

  it('accepts a client whose certificate chains through an intermediate', async () => {
    const mid = await pki.ca.intermediate();
    const credentials = tlsCredentials(
      await mid.issue({ identity: makeIdentity('td', 'other', 'via-intermediate') }),
    );
    const conn = await srv.connect({ credentials });
    try {
      const tunnel = await openTunnel(conn.session, { target: '10.0.0.1:80' });
      tunnel.end();
      await readAll(tunnel);
      assert.deepEqual(srv.requests.at(-1)?.peerIdentity, makeIdentity('td', 'other', 'via-intermediate'));
    } finally {
      conn.session.destroy();
    }
  });

  it('rejects a client certificate from another trust domain', async () => {
    const credentials = await pki.issue({ identity: 'spiffe://clusterset.local/ns/ns/sa/client' });
    const peers: { remoteAddress?: string }[] = [];
    srv.server.once('connectionRejected', (_err, peer) => peers.push(peer));
    await assertServerRejects(srv, () => srv.connect({ credentials }), 'TRUST_DOMAIN_MISMATCH');
    assert.equal(peers[0]?.remoteAddress, '127.0.0.1', 'the rejection names the peer for the early-deny log');
  });

  it('rejects a client certificate without a SPIFFE SAN', async () => {
    const credentials = await pki.issue({ uris: ['https://example.com/not-spiffe'] });
    await assertServerRejects(srv, () => srv.connect({ credentials }), 'NO_SPIFFE_SAN');
  });

  it('rejects an expired certificate on either side', async () => {
    const credentials = await pki.issue({ identity: pki.clientIdentity, ...VALIDITY.expired() });
    await assertServerRejects(srv, () => srv.connect({ credentials }), 'PEER_CERTIFICATE_INVALID');
    assert.match(srv.rejections.at(-1)?.message ?? '', /CERT_HAS_EXPIRED/);

    await using expiredServer = await startHboneServer(pki, {
      credentials: await pki.issue({ identity: pki.serverIdentity, ...VALIDITY.expired() }),
    });
    await assert.rejects(
      expiredServer.connect(),
      (e) =>
        isTlsError('PEER_CERTIFICATE_INVALID')(e) && /CERT_HAS_EXPIRED/.test(String((e as Error).message)),
    );
    assert.equal(expiredServer.requests.length, 0);
  });

  it('rejects a not-yet-valid certificate on either side', async () => {
    const credentials = await pki.issue({ identity: pki.clientIdentity, ...VALIDITY.notYetValid() });
    await assertServerRejects(srv, () => srv.connect({ credentials }), 'PEER_CERTIFICATE_INVALID');
    assert.match(srv.rejections.at(-1)?.message ?? '', /CERT_NOT_YET_VALID/);

    await using futureServer = await startHboneServer(pki, {
      credentials: await pki.issue({ identity: pki.serverIdentity, ...VALIDITY.notYetValid() }),
    });
    await assert.rejects(
      futureServer.connect(),
      (e) =>
        isTlsError('PEER_CERTIFICATE_INVALID')(e) && /CERT_NOT_YET_VALID/.test(String((e as Error).message)),
    );
  });

  it('rejects certificates from a foreign CA on either side', async () => {
    const foreign = await TestCa.create();
    // The foreign client trusts our CA, so only the server's check can stop it.
    const client = {
      ...tlsCredentials(await foreign.issue({ identity: pki.clientIdentity })),
      roots: pki.ca.root,
    };
    await assertServerRejects(srv, () => srv.connect({ credentials: client }), 'PEER_CERTIFICATE_INVALID');

    // The foreign server trusts our CA, so only the client's check can stop it.
    const server = {
      ...tlsCredentials(await foreign.issue({ identity: pki.serverIdentity })),
      roots: pki.ca.root,
    };
    await using foreignServer = await startHboneServer(pki, { credentials: server });
    await assert.rejects(foreignServer.connect(), isTlsError('PEER_CERTIFICATE_INVALID'));
    assert.equal(foreignServer.requests.length, 0);
  });

  it('rejects a server whose SAN is not the pinned identity, before any CONNECT', async () => {
    const before = srv.requests.length;
    await assert.rejects(
      srv.connect({ expectedIdentities: [makeIdentity('td', 'ns', 'someone-else')] }),
      isTlsError('PEER_IDENTITY_MISMATCH'),
    );
    // Right names, wrong trust domain: still another identity.
    await assert.rejects(
      srv.connect({ expectedIdentities: [makeIdentity('td2', 'ns', 'server')] }),
      isTlsError('PEER_IDENTITY_MISMATCH'),
    );
    await sleep(50);
    assert.equal(srv.requests.length, before);
  });

  it('rejects a client offering only http/1.1 ALPN', async () => {
    const before = srv.rejections.length;
    const result = await rawTls({
      ...hboneClientTlsOptions(pki.client, [pki.serverIdentity]),
      ALPNProtocols: ['http/1.1'],
    });
    assert.notEqual(result.alpn, 'http/1.1');
    assert.ok(result.error !== undefined || !result.secure, 'the handshake must not succeed with http/1.1');
    await until(() => srv.rejections.length > before, 'the server to report the rejection');
    assert.equal(srv.rejections.at(-1)?.code, 'ALPN_MISMATCH');
  });

  it('rejects a client offering no ALPN at all', async () => {
    const before = srv.rejections.length;
    const { ALPNProtocols: _, ...noAlpn } = hboneClientTlsOptions(pki.client, [pki.serverIdentity]);
    const result = await rawTls(noAlpn);
    assert.equal(result.alpn, false);
    await until(() => srv.rejections.length > before, 'the server to report the rejection');
    assert.equal(srv.rejections.at(-1)?.code, 'ALPN_MISMATCH');
  });

  it('rejects a TLS-1.2-only client', async () => {
    const before = srv.rejections.length;
    const result = await rawTls({
      ...hboneClientTlsOptions(pki.client, [pki.serverIdentity]),
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384',
    });
    assert.equal(result.secure, false);
    assert.ok(result.error, 'the client must see the handshake fail');
    await until(() => srv.rejections.length > before, 'the server to report the rejection');
    assert.equal(srv.rejections.at(-1)?.code, 'HANDSHAKE_FAILED');
  });

  it('rejects plaintext on the HBONE port without crashing', async () => {
    const before = srv.rejections.length;
    const sock = net.connect(srv.port, '127.0.0.1');
    sock.on('error', () => {});
    sock.end('CONNECT 10.0.0.1:80 HTTP/1.1\r\n\r\n');
    await until(() => srv.rejections.length > before, 'the server to report the rejection');
    assert.equal(srv.rejections.at(-1)?.code, 'HANDSHAKE_FAILED');
  });
});

describe('HBONE request handling', () => {
  /** A raw HTTP/2 session to the server, for requests openTunnel would never send. */
  async function rawSession(options: http2.SecureClientSessionOptions = {}) {
    const conn = await srv.connect();
    conn.session.destroy();
    const socket = tls.connect({
      ...hboneClientTlsOptions(pki.client, [pki.serverIdentity]),
      host: '127.0.0.1',
      port: srv.port,
    });
    const session = http2.connect(`https://127.0.0.1:${srv.port}`, {
      ...options,
      createConnection: () => socket,
    });
    session.on('error', () => {});
    await new Promise((resolve) => session.once('remoteSettings', resolve));
    return session;
  }

  function request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders) {
    return new Promise<{ status?: number; rstCode?: number }>((resolve) => {
      const stream = session.request(headers, { endStream: headers[':method'] !== 'CONNECT' });
      stream.on('error', () => {});
      stream.on('response', (h) => resolve({ status: Number(h[':status']) }));
      stream.on('close', () => resolve({ rstCode: stream.rstCode }));
      stream.resume();
    });
  }

  it('answers a method other than CONNECT with 400', async () => {
    const rejected: HboneError[] = [];
    srv.server.on('requestRejected', (e) => rejected.push(e));
    const session = await rawSession();
    try {
      const before = srv.requests.length;
      assert.deepEqual(
        await request(session, { ':method': 'GET', ':path': '/', ':authority': '10.0.0.1:80' }),
        { status: 400 },
      );
      assert.deepEqual(
        await request(session, { ':method': 'POST', ':path': '/', ':authority': '10.0.0.1:80' }),
        { status: 400 },
      );
      assert.equal(srv.requests.length, before);
      assert.equal(rejected[0]?.code, 'HBONE_METHOD');
    } finally {
      session.destroy();
    }
  });

  it('answers a malformed authority with 400', async () => {
    const session = await rawSession();
    try {
      const before = srv.requests.length;
      for (const authority of ['foo', '10.0.0.1', '10.0.0.1:99999', 'fd00::1:80', '[fd00::1]']) {
        assert.deepEqual(
          await request(session, { ':method': 'CONNECT', ':authority': authority }),
          { status: 400 },
          authority,
        );
      }
      assert.equal(srv.requests.length, before);
    } finally {
      session.destroy();
    }
  });

  it('passes IP and hostname authorities, peer identity and telemetry headers to the handler', async () => {
    const conn = await srv.connect();
    try {
      const t1 = await openTunnel(conn.session, {
        target: { address: 'fd00::5', port: 8080 },
        source: { address: '10.1.2.3', port: 41234 },
        serviceHost: 'reviews.default.svc.cluster.local',
        baggage: { namespace: 'default', workloadType: 'deployment', workloadName: 'productpage-v1' },
        traceparent: '00-0123456789abcdef0123456789abcdef-0123456789abcdef-00',
      });
      t1.end();
      await readAll(t1);
      const r1 = srv.requests.at(-1);
      assert.deepEqual(r1?.authority, { kind: 'ip', address: 'fd00::5', family: 6, port: 8080 });
      assert.deepEqual(r1?.headers, {
        forwarded: 'for="10.1.2.3:41234";host=reviews.default.svc.cluster.local',
        baggage: 'k8s.namespace.name=default,k8s.deployment.name=productpage-v1',
        traceparent: '00-0123456789abcdef0123456789abcdef-0123456789abcdef-00',
        forwardedNetwork: undefined,
      });
      const t2 = await openTunnel(conn.session, { target: 'reviews.default.svc.cluster.local:9080' });
      t2.end();
      await readAll(t2);
      const r2 = srv.requests.at(-1);
      assert.deepEqual(r2?.authority, {
        kind: 'hostname',
        hostname: 'reviews.default.svc.cluster.local',
        port: 9080,
      });
      assert.match(r2?.headers.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
      assert.notEqual(r2?.headers.traceparent, r1?.headers.traceparent);
    } finally {
      conn.session.destroy();
    }
  });

  it('lets the handler answer 401 or 503, which the client reports as HBONE_STATUS', async () => {
    await using s = await startHboneServer(pki, {
      handler: (req) => req.reject(req.authority.kind === 'ip' && req.authority.port === 1 ? 401 : 503),
    });
    const conn = await s.connect();
    try {
      for (const [target, status] of [
        ['10.0.0.1:1', 401],
        ['10.0.0.1:2', 503],
      ] as const) {
        await assert.rejects(
          openTunnel(conn.session, { target }),
          (e) => e instanceof HboneError && e.code === 'HBONE_STATUS' && e.status === status,
        );
      }
    } finally {
      conn.session.destroy();
    }
  });

  it('answers 503 when the handler throws before answering', async () => {
    await using s = await startHboneServer(pki, {
      handler: async () => {
        throw new Error('boom');
      },
    });
    const errors: unknown[] = [];
    s.server.on('handlerError', (e) => errors.push(e));
    const conn = await s.connect();
    try {
      await assert.rejects(
        openTunnel(conn.session, { target: '10.0.0.1:1' }),
        (e) => e instanceof HboneError && e.status === 503,
      );
      assert.equal((errors[0] as HboneError).code, 'HBONE_HANDLER_FAILED');
    } finally {
      conn.session.destroy();
    }
  });

  it('rejects a header list over the 64 KiB server limit, and accepts one under it', async () => {
    // The client's own send limit is raised so the server's limit is what is tested.
    const session = await rawSession({ maxSendHeaderBlockLength: 1 << 20 });
    try {
      const before = srv.requests.length;
      const over = await request(session, {
        ':method': 'CONNECT',
        ':authority': '10.0.0.1:80',
        'x-pad': 'a'.repeat(66 * 1024),
      });
      assert.deepEqual(over, { rstCode: http2.constants.NGHTTP2_ENHANCE_YOUR_CALM });
      assert.equal(srv.requests.length, before, 'the oversized request must not reach the handler');
      const under = await request(session, {
        ':method': 'CONNECT',
        ':authority': '10.0.0.1:80',
        'x-pad': 'a'.repeat(60 * 1024),
      });
      assert.deepEqual(under, { status: 200 });
    } finally {
      session.destroy();
    }
  });

  it('never hands the handler a CONNECT its client reset in the same write (rapid reset)', async () => {
    const session = await rawSession();
    try {
      const before = srv.requests.length;
      // node:http2 flushes each HEADERS and the RST_STREAM that follows it in one write.
      const streams = Array.from({ length: 50 }, () => {
        const st = session.request(
          { ':method': 'CONNECT', ':authority': '10.0.0.1:80' },
          { endStream: false },
        );
        st.on('error', () => {});
        st.close(http2.constants.NGHTTP2_CANCEL);
        return st;
      });
      await Promise.all(streams.map((st) => new Promise((resolve) => st.once('close', resolve))));
      // Still usable, and an ordinary CONNECT still reaches the handler.
      assert.deepEqual(await request(session, { ':method': 'CONNECT', ':authority': '10.0.0.1:80' }), {
        status: 200,
      });
      assert.equal(srv.requests.length, before + 1, 'only the CONNECT that was not reset');
    } finally {
      session.destroy();
    }
  });

  it('advertises ztunnel settings: 4 MiB stream window, 1 MiB frames, 200 streams, 64 KiB headers', async () => {
    const conn = await srv.connect();
    try {
      // Our SETTINGS apply once the server acknowledges them.
      if (conn.session.pendingSettingsAck) await new Promise((r) => conn.session.once('localSettings', r));
      const s = conn.session.remoteSettings;
      assert.equal(s.initialWindowSize, 4 * 1024 * 1024);
      assert.equal(s.maxFrameSize, 1024 * 1024);
      assert.equal(s.maxConcurrentStreams, 200);
      assert.equal(s.maxHeaderListSize, 64 * 1024);
      assert.equal(conn.session.localSettings.maxHeaderListSize, 16 * 1024);
      assert.equal(conn.session.state.localWindowSize, 16 * 1024 * 1024);
    } finally {
      conn.session.destroy();
    }
  });

  it('presents rotated credentials to connections made after setCredentials', async () => {
    await using s = await startHboneServer(pki);
    const v2 = makeIdentity('td', 'ns', 'server-v2');
    s.server.setCredentials(await pki.issue({ identity: v2 }));
    assert.deepEqual(s.server.identity, v2);
    const conn = await s.connect({ expectedIdentities: [v2] });
    conn.session.destroy();
    await assert.rejects(s.connect(), isTlsError('PEER_IDENTITY_MISMATCH'));
  });

  it('closes gracefully: open tunnels finish, new connections are refused', async () => {
    const s = await startHboneServer(pki);
    const conn = await s.connect();
    try {
      const tunnel = await openTunnel(conn.session, { target: '10.0.0.1:80' });
      tunnel.write('before close;');
      let closed = false;
      const closing = s.server.close().then(() => {
        closed = true;
      });
      await new Promise((resolve) => conn.session.once('goaway', resolve));
      await assert.rejects(openTunnel(conn.session, { target: '10.0.0.1:80' }), (e) =>
        causedBy(e, 'HBONE_GOAWAY'),
      );
      assert.equal(closed, false, 'close waits for the open tunnel');
      tunnel.end('after close');
      assert.equal((await readAll(tunnel)).toString(), 'before close;after close');
      await closing;
      await assert.rejects(s.connect(), (e) => causedBy(e, 'HBONE_DIAL_FAILED'));
    } finally {
      conn.session.destroy();
      s.server.destroy();
    }
  });

  it('serves connections from a caller-owned listener and from injected sockets', async () => {
    const server = new HboneServer({ credentials: pki.server, handler: (r) => r.reject(503) });
    // attach(): every connection the caller's listener accepts (ztunnel's in-pod 15008 socket).
    const attached = net.createServer();
    // handleConnection(): one socket at a time, here a listener that injects what it accepts.
    const injecting = net.createServer((socket) => server.handleConnection(socket));
    for (const l of [attached, injecting]) await new Promise<void>((r) => l.listen(0, '127.0.0.1', r));
    server.attach(attached);
    try {
      for (const l of [attached, injecting]) {
        const port = (l.address() as net.AddressInfo).port;
        const conn = await srv.connect({ port });
        await assert.rejects(
          openTunnel(conn.session, { target: '10.0.0.1:1' }),
          (e) => e instanceof HboneError && e.status === 503,
        );
        conn.session.destroy();
      }
      assert.equal(server.address(), undefined, 'the server itself listens on nothing');
    } finally {
      server.destroy();
      attached.close();
      injecting.close();
    }
  });

  it('closes the tunnels of a client that went away on a half-open capable listener', async () => {
    // ztunnel's in-pod listeners allow half-open sockets, so a peer's EOF is only an 'end'.
    const tunnels: Promise<void>[] = [];
    const server = new HboneServer({
      credentials: pki.server,
      handler: (r) => {
        const t = r.accept();
        t.on('error', () => {});
        t.resume();
        tunnels.push(new Promise((resolve) => t.once('close', () => resolve())));
      },
    });
    const halfOpen = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((r) => halfOpen.listen(0, '127.0.0.1', r));
    server.attach(halfOpen);
    try {
      const conn = await srv.connect({ port: (halfOpen.address() as net.AddressInfo).port });
      const tunnel = await openTunnel(conn.session, { target: '10.0.0.1:1' });
      tunnel.on('error', () => {});
      assert.equal(tunnels.length, 1);
      // The client's socket sends FIN (its session ends the TLS connection) without any RST_STREAM.
      conn.socket.end();
      await Promise.race([
        tunnels[0],
        sleep(2000).then(() => assert.fail('the server kept the tunnel of a client that is gone')),
      ]);
    } finally {
      server.destroy();
      halfOpen.close();
    }
  });
});
