// The only place these suites read the process environment: Node children started in the root
// netns inherit it, minus what belongs to this process's own test runner.

/**
 * The test runner's context marker would make a child `node` behave as a test subprocess, and
 * IPC channel descriptors do not exist in the child.
 */
const NOT_INHERITED: readonly string[] = [
  'NODE_TEST_CONTEXT',
  'NODE_CHANNEL_FD',
  'NODE_CHANNEL_SERIALIZATION_MODE',
];

/** A copy of this process's environment for a child process. */
export function childEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !NOT_INHERITED.includes(k)) env[k] = v;
  }
  return env;
}
