import cliProgress from 'cli-progress';

/** A progress bar on stderr when it is a terminal (and not --json); silent otherwise. */
export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private phase = '';

  private readonly t0 = performance.now();
  private readonly trace = process.env.SNAPYARD_TRACE === '1';
  private traced = '';

  constructor(private readonly enabled: boolean = process.stderr.isTTY === true) {}

  update(e: { phase: string; done?: number; total?: number }): void {
    if (this.trace && e.phase !== this.traced) {
      // SNAPYARD_TRACE=1: when each phase starts (seconds since the command started), and memory.
      this.traced = e.phase;
      process.stderr.write(`[${((performance.now() - this.t0) / 1000).toFixed(2)} s, rss ${(process.memoryUsage.rss() / 1e6).toFixed(0)} MB] ${e.phase}\n`);
    }
    if (!this.enabled) return;
    if (e.phase !== this.phase) {
      this.bar?.stop();
      this.bar = null;
      this.phase = e.phase;
      if (e.total === undefined) process.stderr.write(`${e.phase}...\n`);
    }
    if (e.total !== undefined) {
      if (!this.bar) {
        this.bar = new cliProgress.SingleBar(
          { format: `${e.phase.padEnd(12)} [{bar}] {percentage}% {value_mb}/{total_mb} MB`, stream: process.stderr, hideCursor: true },
          cliProgress.Presets.shades_classic,
        );
        this.bar.start(e.total, 0, { value_mb: '0.0', total_mb: (e.total / 1e6).toFixed(1) });
      }
      this.bar.update(e.done ?? 0, { value_mb: ((e.done ?? 0) / 1e6).toFixed(1), total_mb: (e.total / 1e6).toFixed(1) });
    }
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
