/** Sizes and slopes for the scale rows (bench/scale.ts): pure, unit-tested (test/unit/bench-slope.test.ts). */

/** Sizes "a,b,c" from `env[name]` (or `fallback`): at least two positive integers, returned ascending. */
export function scaleSizes(name: string, fallback: string, env: NodeJS.ProcessEnv = process.env): number[] {
  const raw = env[name] ?? fallback;
  const sizes = raw.split(",").map((s) => Number(s.trim()));
  if (sizes.length < 2 || sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`${name} must be sizes like 100,300,1000, got ${raw}`);
  return sizes.sort((a, b) => a - b);
}

/**
 * How y grows with x: the least-squares slope over every point (`fit`) and the slope between each
 * pair of neighbouring points (`steps`, to see whether growth speeds up). Points whose y is not a
 * finite number (a size a server was not run at) are left out.
 */
export function slopes(xs: number[], ys: number[]): { fit: number; steps: number[] } {
  const ok = xs.map((x, i) => [x, ys[i]!] as const).filter(([, y]) => Number.isFinite(y));
  const steps = ok.slice(1).map(([x, y], i) => (y - ok[i]![1]) / (x - ok[i]![0]));
  if (ok.length < 2) return { fit: NaN, steps };
  const mx = ok.reduce((a, [x]) => a + x, 0) / ok.length;
  const my = ok.reduce((a, [, y]) => a + y, 0) / ok.length;
  const fit = ok.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0) / ok.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return { fit, steps };
}
