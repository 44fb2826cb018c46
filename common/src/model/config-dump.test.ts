import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as sec from '@ambient/common/gen/istio/security/authorization_pb';
import * as wl from '@ambient/common/gen/istio/workload/workload_pb';
import {
  addressGateway,
  hostnameGateway,
  ipBytes,
  loadState,
  pbAuthorization,
  pbService,
  pbWorkload,
} from './fixtures/wds.ts';

// The expected document is written out by hand from istioctl's configdump/api.go field names and
// ztunnel's serde spelling of the values; it is the contract `istioctl ztunnel-config` reads.
const GOLDEN = {
  workloads: [
    {
      uid: 'cluster1//Pod/web/web-1',
      workloadIps: ['10.0.0.5', 'fd00::5'],
      waypoint: { destination: 'web/waypoint.web.svc.cluster.local', hboneMtlsPort: 15008 },
      protocol: 'HBONE',
      networkMode: 'Standard',
      name: 'web-1',
      namespace: 'web',
      serviceAccount: 'web',
      workloadName: 'web',
      workloadType: 'deployment',
      canonicalName: 'web',
      canonicalRevision: 'v1',
      clusterId: 'Kubernetes',
      trustDomain: 'cluster.local',
      locality: { region: 'r1', zone: 'z1', subzone: '' },
      node: 'node-a',
      network: '',
      status: 'Healthy',
      hostname: '',
      nativeTunnel: false,
      authorizationPolicies: ['web/sel'],
      services: ['web/web.web.svc.cluster.local'],
      capacity: 1,
    },
    {
      uid: 'cluster1//Pod/web/web-2',
      workloadIps: ['10.0.0.6'],
      networkGateway: { destination: 'net1/192.0.2.1', hboneMtlsPort: 15008 },
      protocol: 'TCP',
      networkMode: 'Standard',
      name: 'web-2',
      namespace: 'web',
      serviceAccount: 'default',
      workloadName: '',
      workloadType: 'pod',
      canonicalName: '',
      canonicalRevision: '',
      clusterId: 'c2',
      trustDomain: 'td.example',
      locality: { region: '', zone: '', subzone: '' },
      node: 'node-b',
      network: 'net1',
      status: 'Unhealthy',
      hostname: '',
      nativeTunnel: false,
      applicationTunnel: { protocol: 'PROXY', port: 15088 },
      authorizationPolicies: [],
      services: ['web/web.web.svc.cluster.local'],
      capacity: 5,
    },
  ],
  services: [
    {
      name: 'web',
      namespace: 'web',
      hostname: 'web.web.svc.cluster.local',
      vips: ['/10.96.0.5', 'net1/10.97.0.0/16'],
      ports: { '80': 8080, '443': 8443 },
      endpoints: {
        'cluster1//Pod/web/web-1': {
          workloadUid: 'cluster1//Pod/web/web-1',
          service: 'web/web.web.svc.cluster.local',
          port: { '80': 8080 },
          status: 'Healthy',
        },
        'cluster1//Pod/web/web-2': {
          workloadUid: 'cluster1//Pod/web/web-2',
          service: 'web/web.web.svc.cluster.local',
          port: { '80': 9090 },
          status: 'Unhealthy',
        },
      },
      subjectAltNames: ['spiffe://cluster.local/ns/web/sa/web'],
      waypoint: { destination: 'web/waypoint.web.svc.cluster.local', hboneMtlsPort: 15008 },
      loadBalancer: { mode: 'Failover', routingPreferences: ['Network', 'Region'], healthPolicy: 'AllowAll' },
      ipFamilies: 'IPv4',
      canonical: true,
    },
  ],
  policies: [
    {
      name: 'strict',
      namespace: 'istio-system',
      scope: 'Global',
      action: 'Deny',
      rules: [[[{ notPrincipals: [{ Presence: [] }] }]]],
      dryRun: false,
    },
    {
      name: 'sel',
      namespace: 'web',
      scope: 'WorkloadSelector',
      action: 'Allow',
      rules: [
        [
          [
            {
              namespaces: [{ Prefix: 'client' }],
              principals: [{ Exact: 'cluster.local/ns/client/sa/app' }, { Suffix: '/sa/admin' }],
              sourceIps: ['10.0.0.0/8'],
              notDestinationIps: ['fd00::1/128'],
              destinationPorts: [80],
              serviceAccounts: [{ namespace: 'client', serviceAccount: 'app' }],
            },
          ],
          [{ notDestinationPorts: [9090] }],
        ],
      ],
      dryRun: true,
    },
  ],
  certificates: [{ identity: 'spiffe://cluster.local/ns/web/sa/web', state: 'Available', certChain: [] }],
  workloadState: {},
};

describe('ProxyState.toJSON (config_dump)', () => {
  test('matches the istioctl ztunnel-config shape for a small state', () => {
    const { state } = loadState({
      addresses: [
        // Inserted out of order: the dump sorts.
        pbWorkload({
          name: 'web-2',
          namespace: 'web',
          ips: ['10.0.0.6'],
          network: 'net1',
          networkGateway: addressGateway('192.0.2.1', 'net1'),
          tunnelProtocol: wl.TunnelProtocol.NONE,
          trustDomain: 'td.example',
          clusterId: 'c2',
          node: 'node-b',
          workloadType: wl.WorkloadType.POD,
          status: wl.WorkloadStatus.UNHEALTHY,
          capacity: 5,
          applicationTunnel: { protocol: wl.ApplicationTunnel_Protocol.PROXY, port: 15088 },
          svc: { 'web/web.web.svc.cluster.local': [[80, 9090]] },
        }),
        pbWorkload({
          name: 'web-1',
          namespace: 'web',
          serviceAccount: 'web',
          ips: ['10.0.0.5', 'fd00::5'],
          waypoint: hostnameGateway('web', 'waypoint.web.svc.cluster.local'),
          canonicalName: 'web',
          canonicalRevision: 'v1',
          workloadName: 'web',
          locality: { region: 'r1', zone: 'z1' },
          authorizationPolicies: ['web/sel'],
          svc: { 'web/web.web.svc.cluster.local': [[80, 8080]] },
        }),
        pbService({
          name: 'web',
          namespace: 'web',
          addresses: [
            { network: '', address: ipBytes('10.96.0.5') },
            { network: 'net1', address: ipBytes('10.97.0.0'), length: 16 },
          ],
          portPairs: [
            [443, 8443],
            [80, 8080],
          ],
          subjectAltNames: ['spiffe://cluster.local/ns/web/sa/web'],
          waypoint: hostnameGateway('web', 'waypoint.web.svc.cluster.local'),
          loadBalancing: {
            mode: wl.LoadBalancing_Mode.FAILOVER,
            routingPreference: [wl.LoadBalancing_Scope.NETWORK, wl.LoadBalancing_Scope.REGION],
            healthPolicy: wl.LoadBalancing_HealthPolicy.ALLOW_ALL,
          },
          ipFamilies: wl.IPFamilies.IPV4_ONLY,
          canonical: true,
        }),
      ],
      policies: [
        pbAuthorization({
          name: 'sel',
          namespace: 'web',
          scope: sec.Scope.WORKLOAD_SELECTOR,
          dryRun: true,
          rules: [
            {
              clauses: [
                {
                  matches: [
                    {
                      namespaces: [{ matchType: { case: 'prefix', value: 'client' } }],
                      principals: [
                        { matchType: { case: 'exact', value: 'cluster.local/ns/client/sa/app' } },
                        { matchType: { case: 'suffix', value: '/sa/admin' } },
                      ],
                      sourceIps: [{ address: ipBytes('10.0.0.0'), length: 8 }],
                      notDestinationIps: [{ address: ipBytes('fd00::1'), length: 128 }],
                      destinationPorts: [80],
                      serviceAccounts: [{ namespace: 'client', serviceAccount: 'app' }],
                    },
                  ],
                },
                { matches: [{ notDestinationPorts: [9090] }] },
              ],
            },
          ],
        }),
        pbAuthorization({
          name: 'strict',
          namespace: 'istio-system',
          scope: sec.Scope.GLOBAL,
          action: sec.Action.DENY,
          rules: [
            { clauses: [{ matches: [{ notPrincipals: [{ matchType: { case: 'presence', value: {} } }] }] }] },
          ],
        }),
      ],
    });
    state.setDumpHooks({
      certificates: () => [
        { identity: 'spiffe://cluster.local/ns/web/sa/web', state: 'Available', certChain: [] },
      ],
    });
    const text = JSON.stringify(state);
    assert.deepEqual(JSON.parse(text), GOLDEN);
    assert.equal(JSON.stringify(state), text, 'two dumps of one state are byte-identical');
  });

  test('an empty state dumps empty sections', () => {
    const { state } = loadState({});
    assert.deepEqual(state.toJSON(), {
      workloads: [],
      services: [],
      policies: [],
      certificates: [],
      workloadState: {},
    });
  });
});
