import { AuthorizationSchema } from '@ambient/common/gen/istio/security/authorization_pb';
import { AddressSchema, WorkloadSchema } from '@ambient/common/gen/istio/workload/workload_pb';
import { create, toBinary } from '@bufbuild/protobuf';

/** The WDS type URLs ztunnel subscribes to (spec §3.1). */
export const ADDRESS_TYPE = 'type.googleapis.com/istio.workload.Address';
export const AUTHORIZATION_TYPE = 'type.googleapis.com/istio.security.Authorization';

/** An encoded `Address{workload}` for a pod, named by its uid as istiod names it. */
export function podAddress(
  namespace: string,
  name: string,
  ip: string,
  serviceAccount = 'default',
): {
  readonly uid: string;
  readonly value: Uint8Array;
} {
  const uid = `Kubernetes//Pod/${namespace}/${name}`;
  const workload = create(WorkloadSchema, {
    uid,
    name,
    namespace,
    addresses: [Uint8Array.from(ip.split('.').map(Number))],
    serviceAccount,
    node: 'node-a',
  });
  return {
    uid,
    value: toBinary(AddressSchema, create(AddressSchema, { type: { case: 'workload', value: workload } })),
  };
}

/** An encoded Authorization `namespace/name`. */
export function authorization(
  namespace: string,
  name: string,
  dryRun = false,
): {
  readonly name: string;
  readonly value: Uint8Array;
} {
  return {
    name: `${namespace}/${name}`,
    value: toBinary(AuthorizationSchema, create(AuthorizationSchema, { name, namespace, dryRun })),
  };
}
