// The only place the harness reads the process environment: processes it starts (CNI plugins,
// commands in pods and nodes) inherit it, as a container runtime's plugins inherit the runtime's.

/**
 * Variables that belong to this process's own runner and would confuse a Node child: the test
 * runner's context marker would make a child `node` script behave as a test subprocess, and
 * IPC channel descriptors do not exist in the child.
 */
const NOT_INHERITED = ['NODE_TEST_CONTEXT', 'NODE_CHANNEL_FD', 'NODE_CHANNEL_SERIALIZATION_MODE'] as const;

/** A copy of this process's environment for a child process, with `extra` on top. */
export function childEnv(extra: Readonly<Record<string, string>> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !(NOT_INHERITED as readonly string[]).includes(k)) env[k] = v;
  }
  return Object.assign(env, extra);
}
