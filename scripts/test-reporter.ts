// A node:test reporter that records every skipped test (file, name, reason) as JSON lines, so the
// runner can fail a CI run in which a suite that must run was skipped.
import { appendFileSync } from 'node:fs';

interface TestEventData {
  name: string;
  file?: string;
  skip?: string | boolean;
  nesting: number;
}

const out = process.env.AMBIENT_SKIP_REPORT;

export default async function* skipReporter(
  source: AsyncIterable<{ type: string; data: TestEventData }>,
): AsyncGenerator<string> {
  for await (const event of source) {
    if ((event.type === 'test:pass' || event.type === 'test:fail') && event.data.skip !== undefined) {
      const reason = typeof event.data.skip === 'string' ? event.data.skip : '(no reason given)';
      if (out) {
        appendFileSync(out, `${JSON.stringify({ file: event.data.file, name: event.data.name, reason })}\n`);
      }
    }
  }
  yield '';
}
