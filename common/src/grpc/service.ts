import {
  type DescMessage,
  type DescService,
  fromBinary,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import {
  type ChannelCredentials,
  type Client,
  type ClientOptions,
  type MethodDefinition,
  makeGenericClientConstructor,
  type ServiceDefinition,
} from '@grpc/grpc-js';

/**
 * Turns a protobuf-es service descriptor into a grpc-js service definition, so grpc-js carries
 * the transport (HTTP/2, deadlines, keepalive, status codes) and protobuf-es the messages.
 * Method keys are the descriptor's `localName` (`deltaAggregatedResources`, `createCertificate`).
 */
export function grpcServiceDefinition(service: DescService): ServiceDefinition {
  const def: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    const requestStream = method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming';
    const responseStream = method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming';
    def[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      originalName: method.name,
      requestStream,
      responseStream,
      requestSerialize: serializer(method.input),
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
    };
  }
  return def;
}

function serializer<D extends DescMessage>(desc: D): (msg: unknown) => Buffer {
  return (msg) => {
    const bytes = toBinary(desc, msg as MessageShape<D>);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(desc: D): (buf: Buffer) => MessageShape<D> {
  return (buf) => fromBinary(desc, buf);
}

/** A grpc-js client constructor for a protobuf-es service. */
export function grpcClientConstructor(
  service: DescService,
): new (
  address: string,
  credentials: ChannelCredentials,
  options?: ClientOptions,
) => Client {
  return makeGenericClientConstructor(grpcServiceDefinition(service), service.typeName);
}
