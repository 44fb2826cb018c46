/** The outcome of checking a pod's redirection against what it should be. */
export interface RedirectCheck {
  /** True when every expected piece is in place. */
  readonly ok: boolean;
  /** One line per missing or wrong piece, naming it (empty when ok). */
  readonly problems: readonly string[];
}

/** The outcome of a reconcile: the check before, and whether anything was re-applied. */
export interface RedirectReconcile {
  readonly before: RedirectCheck;
  readonly repaired: boolean;
}

export function checkResult(problems: readonly string[]): RedirectCheck {
  return { ok: problems.length === 0, problems };
}
