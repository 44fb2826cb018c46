/**
 * `ambientctl`: the local ambient mesh's command line (see cli/program.ts for the verbs). Run
 * through bin/ambientctl, which starts it on the repository's pinned Node.
 */
import { run } from './cli/program.ts';

process.exit(await run(process.argv.slice(2)));
