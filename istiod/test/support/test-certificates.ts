import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** PEM material for a TLS xDS test: a CA, istiod's serving cert, and a client cert. */
export interface TestCertificates {
  readonly ca: Buffer;
  readonly serverKey: Buffer;
  readonly serverCert: Buffer;
  readonly clientKey: Buffer;
  readonly clientCert: Buffer;
}

/**
 * Issues throwaway certificates with the openssl CLI (P-256, one day): the server's for
 * 127.0.0.1, the client's with `clientUri` as its URI SAN, as Istio workload certificates carry.
 * The working directory is removed before returning.
 */
export function issueTestCertificates(clientUri: string): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), 'xds-tls-'));
  const openssl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  };
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    openssl(
      'req',
      '-x509',
      ...ec,
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-subj',
      '/O=xds-test-ca',
      '-days',
      '1',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign',
    );
    const leaf = (name: string, ext: string): void => {
      writeFileSync(join(dir, `${name}.ext`), `${ext}\n`);
      openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/O=${name}`);
      openssl(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        '-days',
        '1',
        '-extfile',
        `${name}.ext`,
      );
    };
    leaf('server', 'subjectAltName=IP:127.0.0.1,DNS:istiod.istio-system.svc\nextendedKeyUsage=serverAuth');
    leaf('client', `subjectAltName=critical,URI:${clientUri}\nextendedKeyUsage=clientAuth`);
    const read = (f: string): Buffer => readFileSync(join(dir, f));
    return {
      ca: read('ca.crt'),
      serverKey: read('server.key'),
      serverCert: read('server.crt'),
      clientKey: read('client.key'),
      clientCert: read('client.crt'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
