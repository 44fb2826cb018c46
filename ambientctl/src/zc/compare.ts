/** Byte-wise string order, as Go's `cmp.Compare` and `<` on strings sort istioctl's tables. */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Orders by each key in turn. */
export function byKeys<T>(...keys: ((t: T) => string)[]): (a: T, b: T) => number {
  return (a, b) => {
    for (const key of keys) {
      const c = compareStrings(key(a), key(b));
      if (c !== 0) return c;
    }
    return 0;
  };
}

/** istioctl's `strings.EqualFold` filter match; an empty filter matches everything. */
export function matchesFold(value: string, filter: string | undefined): boolean {
  return filter === undefined || filter === '' || value.toLowerCase() === filter.toLowerCase();
}
