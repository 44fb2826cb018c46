/**
 * Run inside a node's netns (`node.execNode`): asks istiod's CA for a workload certificate the
 * way that node's ztunnel does (its bearer token, `ImpersonatedIdentity`, istiod's root and
 * serving name), and prints `{"key","certChain","roots"}` as one JSON line. Tests that must speak
 * HBONE as a mesh workload get a certificate istiod really issued, not one from a test CA.
 *
 * Arguments: <istiod host:port> <root-cert.pem path> <istiod server name> <token> <spiffe id>
 */
import { readFile } from 'node:fs/promises';
import { parseIdentity } from '@ambient/common/identity';
import { CaClient } from '@ambient/common/identity/ca-client';
import { Logging } from '@ambient/common/log';

const [address, rootCertPath, serverName, token, identity] = process.argv.slice(2);
if (!address || !rootCertPath || !serverName || !token || !identity) {
  process.stderr.write(
    'usage: fetch-workload-certificate <address> <root-cert> <server-name> <token> <id>\n',
  );
  process.exit(2);
}
const client = new CaClient({
  address,
  clusterId: 'Kubernetes',
  token: () => token,
  tls: { rootCert: () => readFile(rootCertPath), serverName },
  impersonate: true,
  log: new Logging({ levels: 'off' }).logger('ca'),
});
try {
  const cert = await client.fetchCertificate(parseIdentity(identity));
  process.stdout.write(
    `${JSON.stringify({ key: cert.key, certChain: cert.certChain, roots: cert.roots })}\n`,
  );
} finally {
  client.close();
}
