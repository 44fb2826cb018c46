import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NodeSchema } from '@ambient/common/gen/envoy/config/core/v3/base_pb';
import { makeIdentity } from '@ambient/common/identity';
import { create } from '@bufbuild/protobuf';
import { Metadata } from '@grpc/grpc-js';
import { authenticationRequestOf, checkProxyIdentity, type XdsCaller } from '../src/xds/authorize.ts';
import { XdsError } from '../src/xds/errors.ts';
import { parseProxyNode } from '../src/xds/node.ts';

const ZTUNNEL_ID = 'ztunnel~10.244.1.7~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local';

function node(id: string, metadata: Record<string, string> = {}) {
  return create(NodeSchema, { id, cluster: 'Kubernetes', metadata });
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    assert.ok(err instanceof XdsError, `expected an XdsError, got ${String(err)}`);
    return err.code;
  }
}

describe('parseProxyNode', () => {
  it('parses a ztunnel node id and its metadata', () => {
    const n = parseProxyNode(
      node(ZTUNNEL_ID, {
        NAME: 'ztunnel-x7k2p',
        NAMESPACE: 'istio-system',
        NODE_NAME: 'worker-1',
        CLUSTER_ID: 'Kubernetes',
        INSTANCE_IPS: '10.244.1.7,fd00::7',
      }),
    );
    assert.equal(n.type, 'ztunnel');
    assert.equal(n.proxyId, 'ztunnel-x7k2p.istio-system');
    assert.equal(n.dnsDomain, 'istio-system.svc.cluster.local');
    assert.equal(n.configNamespace, 'istio-system');
    assert.deepEqual(n.ipAddresses, ['10.244.1.7', 'fd00::7']);
    assert.equal(n.metadata.nodeName, 'worker-1');
    assert.equal(n.metadata.clusterId, 'Kubernetes');
    assert.equal(n.metadata.serviceAccount, undefined);
    assert.equal(n.cluster, 'Kubernetes');
  });

  it('classifies waypoint, sidecar and router proxies by the prefix', () => {
    assert.equal(
      parseProxyNode(node('waypoint~10.0.0.9~waypoint-abc.app~app.svc.cluster.local')).type,
      'waypoint',
    );
    assert.equal(parseProxyNode(node('sidecar~10.0.0.8~web-1.app~app.svc.cluster.local')).type, 'sidecar');
    assert.equal(
      parseProxyNode(node('router~10.0.0.7~gw-1.ingress~ingress.svc.cluster.local')).type,
      'router',
    );
  });

  it('takes the namespace from the DNS domain when NAMESPACE is absent', () => {
    assert.equal(
      parseProxyNode(node('sidecar~10.0.0.8~web-1.app~app.svc.cluster.local')).configNamespace,
      'app',
    );
    assert.equal(
      parseProxyNode(node('sidecar~10.0.0.8~web-1.app~app.svc.cluster.local', { NAMESPACE: 'other' }))
        .configNamespace,
      'other',
    );
  });

  it('refuses a missing node, a malformed id, an unknown type and a bad IP', () => {
    assert.equal(
      codeOf(() => parseProxyNode(undefined)),
      'NODE_MISSING',
    );
    assert.equal(
      codeOf(() => parseProxyNode(node(''))),
      'NODE_MISSING',
    );
    assert.equal(
      codeOf(() => parseProxyNode(node('ztunnel~10.0.0.1~x.ns'))),
      'NODE_ID_INVALID',
    );
    assert.equal(
      codeOf(() => parseProxyNode(node('envoy~10.0.0.1~x.ns~ns.svc.cluster.local'))),
      'NODE_ID_INVALID',
    );
    assert.equal(
      codeOf(() => parseProxyNode(node('ztunnel~10.0.0.300~x.ns~ns.svc.cluster.local'))),
      'NODE_ID_INVALID',
    );
    assert.equal(
      codeOf(() => parseProxyNode(node(ZTUNNEL_ID, { INSTANCE_IPS: '10.0.0.1,nope' }))),
      'NODE_ID_INVALID',
    );
  });
});

describe('checkProxyIdentity', () => {
  const ztunnel: XdsCaller = {
    identity: makeIdentity('cluster.local', 'istio-system', 'ztunnel'),
    namespace: 'istio-system',
    serviceAccount: 'ztunnel',
  };

  it('accepts the caller of the namespace (and service account) the node claims', () => {
    checkProxyIdentity(ztunnel, parseProxyNode(node(ZTUNNEL_ID, { NAMESPACE: 'istio-system' })));
    checkProxyIdentity(
      ztunnel,
      parseProxyNode(node(ZTUNNEL_ID, { NAMESPACE: 'istio-system', SERVICE_ACCOUNT: 'ztunnel' })),
    );
  });

  it('refuses another namespace or another service account', () => {
    const sleep: XdsCaller = {
      identity: 'spiffe://cluster.local/ns/default/sa/sleep',
      namespace: 'default',
      serviceAccount: 'sleep',
    };
    assert.equal(
      codeOf(() =>
        checkProxyIdentity(sleep, parseProxyNode(node(ZTUNNEL_ID, { NAMESPACE: 'istio-system' }))),
      ),
      'IDENTITY_MISMATCH',
    );
    // Without NAMESPACE the DNS domain's namespace is what the node claims.
    assert.equal(
      codeOf(() => checkProxyIdentity(sleep, parseProxyNode(node(ZTUNNEL_ID)))),
      'IDENTITY_MISMATCH',
    );
    assert.equal(
      codeOf(() =>
        checkProxyIdentity(
          ztunnel,
          parseProxyNode(node(ZTUNNEL_ID, { NAMESPACE: 'istio-system', SERVICE_ACCOUNT: 'istiod' })),
        ),
      ),
      'IDENTITY_MISMATCH',
    );
  });
});

describe('authenticationRequestOf', () => {
  it('passes the metadata and the verified peer certificate, if any', () => {
    const metadata = new Metadata();
    metadata.set('authorization', 'Bearer t');
    const raw = Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]);
    const withCert = authenticationRequestOf({
      metadata,
      getAuthContext: () => ({ transportSecurityType: 'ssl', sslPeerCertificate: { raw } as never }),
    });
    assert.equal(withCert.metadata, metadata);
    assert.deepEqual(withCert.peerCertificate, raw);
    const plain = authenticationRequestOf({ metadata, getAuthContext: () => ({}) });
    assert.equal(plain.peerCertificate, undefined);
  });
});
