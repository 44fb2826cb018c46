/**
 * The guided check's reading of ztunnel's metrics. The check itself runs against real meshes in
 * once.test.ts (passing, and failing with istio-cni broken) and host-daemon.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { counterSum } from '../src/check/prometheus.ts';

const METRICS = `# HELP istio_tcp_connections_opened_total The total number of TCP connections opened
# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{reporter="destination",source_principal="spiffe://cluster.local/ns/demo/sa/client",connection_security_policy="mutual_tls"} 3
istio_tcp_connections_opened_total{reporter="source",source_principal="spiffe://cluster.local/ns/demo/sa/client",connection_security_policy="mutual_tls"} 5
istio_tcp_connections_opened_total{reporter="destination",source_principal="unknown",connection_security_policy="unknown"} 2
istio_tcp_connections_opened_total_extra{reporter="destination"} 100
istio_tcp_connections_closed_total{reporter="destination",response_flags="DENY",note="a \\"quoted\\", value"} 1.5
istio_build{component="ztunnel"} 1
`;

describe('counterSum', () => {
  it('sums the samples whose labels contain every pair given', () => {
    assert.equal(counterSum(METRICS, 'istio_tcp_connections_opened_total'), 10);
    assert.equal(counterSum(METRICS, 'istio_tcp_connections_opened_total', { reporter: 'destination' }), 5);
    assert.equal(
      counterSum(METRICS, 'istio_tcp_connections_opened_total', {
        reporter: 'destination',
        source_principal: 'spiffe://cluster.local/ns/demo/sa/client',
        connection_security_policy: 'mutual_tls',
      }),
      3,
    );
    assert.equal(counterSum(METRICS, 'istio_tcp_connections_opened_total', { reporter: 'nobody' }), 0);
  });

  it('matches the metric name exactly, and reads escaped label values', () => {
    assert.equal(counterSum(METRICS, 'istio_tcp_connections_opened'), 0);
    assert.equal(
      counterSum(METRICS, 'istio_tcp_connections_closed_total', {
        response_flags: 'DENY',
        note: 'a "quoted", value',
      }),
      1.5,
    );
    assert.equal(counterSum(METRICS, 'istio_build'), 1);
  });
});
