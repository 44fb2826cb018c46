// Copies generated protobuf code (JavaScript plus .d.ts, which tsc does not emit) into dist/.
import { cpSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';

const [from, to] = process.argv.slice(2);
if (!from || !to) {
  console.error('usage: copy-generated.ts <from> <to>');
  process.exit(2);
}
if (!existsSync(from)) {
  console.error(`copy-generated: ${resolve(from)} does not exist; run the generate task first`);
  process.exit(1);
}
cpSync(from, to, { recursive: true });
