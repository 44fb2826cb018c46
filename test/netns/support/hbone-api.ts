// The HBONE, TLS and test-PKI API the netns suites use, gathered in one place. @ambient/common
// does not export `./hbone`, `./tls` or `./testing` yet, so these come from its sources by path;
// once those subpaths exist, only this file changes.
export {
  connectHbone,
  type HboneConnectOptions,
  type HboneConnectRequest,
  type HboneDialer,
} from '../../../common/src/hbone/client.ts';
export { HbonePool, type HbonePoolStats, type WorkloadKey } from '../../../common/src/hbone/pool.ts';
export { type HboneRequest, HboneServer } from '../../../common/src/hbone/server.ts';
export type { HboneTunnel } from '../../../common/src/hbone/tunnel.ts';
export { TestCa, tlsCredentials } from '../../../common/src/testing/pki.ts';
export type { TlsCredentials } from '../../../common/src/tls/secure-context.ts';
