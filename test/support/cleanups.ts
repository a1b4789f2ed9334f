/**
 * What a test file started and must stop, undone in reverse order in its `after` hook.
 *
 * Why not a plain array: a cleanup that never settles (a client's quit() on a Redis Cluster that
 * lost a node, say) held a test file open long after its last test passed (2026-12-05, Node 24,
 * cluster-failover: the file's process did not exit for over 16 minutes). Here each cleanup gets
 * `stepMs`; one that is still pending then is named on stderr and left behind, and the next one
 * runs. If the process is still alive `reportAfterMs` after the last cleanup (something is still
 * holding the event loop), the active resources are printed, so the next hang names its cause.
 * Neither timer keeps the process alive.
 */
export class Cleanups {
  private readonly steps: { name: string; run: () => unknown }[] = [];

  constructor(private readonly file: string) {}

  add(name: string, run: () => unknown): void {
    this.steps.push({ name, run });
  }

  async run(opts: { stepMs?: number; reportAfterMs?: number } = {}): Promise<void> {
    const stepMs = opts.stepMs ?? 30_000;
    for (const { name, run } of this.steps.splice(0).reverse()) {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<"late">((resolve) => {
        timer = setTimeout(() => resolve("late"), stepMs);
        timer.unref();
      });
      const done = Promise.resolve()
        .then(run)
        .then(
          () => "done" as const,
          () => "done" as const,
        );
      if ((await Promise.race([done, late])) === "late") process.stderr.write(`# ${this.file}: cleanup "${name}" did not finish within ${stepMs} ms; going on\n`);
      clearTimeout(timer);
    }
    setTimeout(() => {
      process.stderr.write(`# ${this.file}: still running ${opts.reportAfterMs ?? 20_000} ms after its cleanups; active resources: ${JSON.stringify(process.getActiveResourcesInfo())}\n`);
    }, opts.reportAfterMs ?? 20_000).unref();
  }
}
