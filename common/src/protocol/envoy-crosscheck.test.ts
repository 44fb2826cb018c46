/**
 * Cross-checks the minimal Envoy copy against Envoy's real protos (the copies bundled with
 * @grpc/grpc-js-xds, parsed with protobufjs): every message, field and method we declare must exist
 * in Envoy with the same name, number, type, label and oneof.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { type DescField, type DescFile, type DescMessage, ScalarType } from '@bufbuild/protobuf';
import protobuf from 'protobufjs';
import { GEN_DIR, loadGenerated } from './fixtures/generated.ts';

const gen = await loadGenerated(GEN_DIR);
const require = createRequire(import.meta.url);
const xdsDeps = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
const protobufjsDir = dirname(require.resolve('protobufjs/package.json'));
const includeDirs = [
  join(xdsDeps, 'envoy-api'),
  join(xdsDeps, 'googleapis'),
  join(xdsDeps, 'xds'),
  join(xdsDeps, 'protoc-gen-validate'),
  // google/protobuf/descriptor.proto, imported by Envoy's annotations.
  protobufjsDir,
];

function loadEnvoy(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    for (const dir of includeDirs) {
      const candidate = join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return target;
  };
  root.loadSync(['envoy/service/discovery/v3/ads.proto', 'google/rpc/status.proto'], { keepCase: true });
  root.resolveAll();
  return root;
}

const ourFiles: DescFile[] = [
  gen.base.file_envoy_config_core_v3_base,
  gen.status.file_google_rpc_status,
  gen.discovery.file_envoy_service_discovery_v3_discovery,
  gen.ads.file_envoy_service_discovery_v3_ads,
];

function ourMessages(): DescMessage[] {
  const out: DescMessage[] = [];
  const visit = (m: DescMessage): void => {
    out.push(m);
    for (const nested of m.nestedMessages) visit(nested);
  };
  for (const file of ourFiles) for (const m of file.messages) visit(m);
  return out;
}

/** One field's shape, written the same way for both sides so they can be compared as strings. */
interface Shape {
  readonly number: number;
  readonly type: string;
  readonly label: 'singular' | 'repeated' | 'map';
  readonly oneof: string;
}

function ourShape(field: DescField): Shape {
  const element = (scalar: ScalarType | undefined, typeName: string | undefined): string =>
    typeName ?? (scalar === undefined ? '(none)' : ScalarType[scalar].toLowerCase());
  const valueType = element(field.scalar, field.message?.typeName ?? field.enum?.typeName);
  switch (field.fieldKind) {
    case 'map':
      return {
        number: field.number,
        type: `${ScalarType[field.mapKey].toLowerCase()} => ${valueType}`,
        label: 'map',
        oneof: '',
      };
    case 'list':
      return { number: field.number, type: valueType, label: 'repeated', oneof: '' };
    default:
      return { number: field.number, type: valueType, label: 'singular', oneof: field.oneof?.name ?? '' };
  }
}

function envoyShape(field: protobuf.Field): Shape {
  const valueType = field.resolvedType ? field.resolvedType.fullName.replace(/^\./, '') : field.type;
  if (field instanceof protobuf.MapField) {
    return { number: field.id, type: `${field.keyType} => ${valueType}`, label: 'map', oneof: '' };
  }
  return {
    number: field.id,
    type: valueType,
    label: field.repeated ? 'repeated' : 'singular',
    oneof: field.partOf?.name ?? '',
  };
}

const envoy = loadEnvoy();

describe('minimal Envoy copy agrees with Envoy’s protos', () => {
  test('Envoy’s protos load (sanity: a field we do not copy is there)', () => {
    const node = envoy.lookupType('envoy.config.core.v3.Node');
    assert.equal(node.fields.user_agent_build_version?.id, 8);
  });

  for (const message of ourMessages()) {
    test(`message ${message.typeName}`, () => {
      const theirs = envoy.lookupType(message.typeName);
      assert.ok(message.fields.length > 0 || theirs.fieldsArray.length === 0, 'copy has no fields');
      for (const field of message.fields) {
        const their = theirs.fields[field.name];
        assert.ok(their !== undefined, `${message.typeName}.${field.name} does not exist in Envoy`);
        assert.deepEqual(ourShape(field), envoyShape(their), `${message.typeName}.${field.name}`);
      }
      // Our reserved numbers must be reserved (or unused) there too, never a live field.
      for (const range of message.proto.reservedRange) {
        for (let n = range.start; n < range.end; n++) {
          assert.equal(
            theirs.fieldsArray.find((f) => f.id === n),
            undefined,
            `${message.typeName} reserves ${n}, a live field in Envoy`,
          );
        }
      }
    });
  }

  for (const file of ourFiles) {
    for (const service of file.services) {
      test(`service ${service.typeName}`, () => {
        const theirs = envoy.lookupService(service.typeName);
        for (const method of service.methods) {
          const their = theirs.methods[method.name];
          assert.ok(their !== undefined, `${service.typeName}.${method.name} does not exist in Envoy`);
          their.resolve();
          assert.deepEqual(
            {
              input: method.input.typeName,
              output: method.output.typeName,
              clientStreaming:
                method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
              serverStreaming:
                method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
            },
            {
              input: their.resolvedRequestType?.fullName.replace(/^\./, ''),
              output: their.resolvedResponseType?.fullName.replace(/^\./, ''),
              clientStreaming: their.requestStream === true,
              serverStreaming: their.responseStream === true,
            },
          );
        }
      });
    }
  }
});
