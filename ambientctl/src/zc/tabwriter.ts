/**
 * Aligned columns as Go's text/tabwriter prints them with istioctl's settings (minwidth 0,
 * padding `padding`, pad with spaces, no flags): every cell but a row's last is padded to its
 * column's widest cell plus the padding; the last cell is printed as is. So `zc` tables line up
 * exactly as `istioctl ztunnel-config` prints the same dump.
 */
export function formatTable(rows: readonly (readonly string[])[], padding = 1): string {
  const widths: number[] = [];
  for (const row of rows) {
    // The last cell of a row is not terminated by a tab, so it takes no part in a column.
    for (let i = 0; i < row.length - 1; i++) {
      widths[i] = Math.max(widths[i] ?? 0, width(row[i] ?? ''));
    }
  }
  return rows
    .map((row) =>
      row
        .map((cell, i) =>
          i === row.length - 1 ? cell : cell + ' '.repeat((widths[i] ?? 0) - width(cell) + padding),
        )
        .join(''),
    )
    .map((line) => `${line}\n`)
    .join('');
}

/** Width in runes, as tabwriter counts (no East Asian width handling there either). */
function width(cell: string): number {
  return [...cell].length;
}
