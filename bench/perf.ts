/**
 * `--perf DIR`: Linux `perf record` of the whole machine over a run's message phase only (start-up
 * and connecting left out), with the nodes started under `node --perf-basic-prof` so their
 * JavaScript has names. Where a CPU profile (`--profile`) samples wall time inside each node, this
 * samples the cores: kernel time (system calls, the scheduler), V8's runtime and collector, native
 * crypto and JavaScript, by process and library, in one picture.
 *
 * Each run leaves DIR/SCENARIO-rROUND.data and, read at once with `perf report` while the nodes'
 * symbol maps (/tmp/perf-PID.map, written by V8) still exist, DIR/SCENARIO-rROUND.txt: the share of
 * the samples by library and by symbol. The maps are removed afterwards.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

/**
 * The node flags of a node under `--perf DIR`: V8 writes /tmp/perf-PID.map (what `perf report` names
 * JavaScript by), and the log that flag turns on goes to DIR/v8-PID.log instead of an
 * `isolate-*-v8.log` in the working directory.
 */
export function perfNodeFlags(dir: string): string[] {
  return ['--perf-basic-prof', '--no-logfile-per-isolate', `--logfile=${join(dir, 'v8-%p.log')}`];
}

/** Samples per second and core. */
const FREQUENCY = 1999;

/** Recordings running: told to stop (SIGINT) when this process exits, so none outlives the benchmark. */
const recording = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of recording) child.kill('SIGINT');
});

/**
 * Whether `perf record -a` works here (installed, and allowed: root or a low enough
 * `kernel.perf_event_paranoid`): `undefined` when it does, else what perf said. A short recording of
 * `true` into DIR, removed.
 */
export function perfProblem(dir: string, program = 'perf'): string | undefined {
  const out = join(dir, `check-${process.pid}.data`);
  const r = spawnSync(program, ['record', '-a', '-q', '-o', out, '--', 'true'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  rmSync(out, { force: true });
  if (r.error !== undefined) return r.error.message;
  return r.status === 0 ? undefined : `perf record exited with ${r.status}: ${r.stderr.trim()}`;
}

export interface PerfRecording {
  /** Ends the recording (SIGINT: perf writes its file) and waits for perf to exit, at most 10 s. */
  stop(): Promise<void>;
}

/**
 * Starts `perf record -a` into DIR/NAME.data and waits until it runs (~0.3 s; its own start-up
 * would otherwise land in the phase). Throws when perf is missing or refuses.
 */
export async function startPerf(dir: string, name: string, program = 'perf'): Promise<PerfRecording> {
  const child = spawn(
    program,
    ['record', '-a', '-F', String(FREQUENCY), '-q', '-o', join(dir, `${name}.data`)],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', (err) => {
      stderr += err.message;
      resolve(null);
    });
  });
  recording.add(child);
  void exited.then(() => recording.delete(child));
  const early = await Promise.race([exited, delay(300, 'running' as const, { ref: false })]);
  if (early !== 'running') throw new Error(`perf record did not start (exit ${early}): ${stderr.trim()}`);
  return { stop: () => stopPerf(child, exited) };
}

async function stopPerf(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  child.kill('SIGINT');
  const done = await Promise.race([exited.then(() => true), delay(10_000, false, { ref: false })]);
  if (!done) {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Removes what nodes started with {@link perfNodeFlags} leave: their symbol maps and V8 logs. */
export function removePerfTraces(dir: string, pids: readonly number[]): void {
  for (const pid of pids) {
    rmSync(`/tmp/perf-${pid}.map`, { force: true });
    rmSync(join(dir, `v8-${pid}.log`), { force: true });
  }
}

/**
 * Writes DIR/NAME.txt from DIR/NAME.data (samples by process and library, then the top symbols),
 * while the nodes' symbol maps still exist; then removes those ({@link removePerfTraces}).
 */
export function reportPerf(dir: string, name: string, pids: readonly number[], program = 'perf'): void {
  const data = join(dir, `${name}.data`);
  const report = (sort: string, limit: number): string => {
    const r = spawnSync(
      program,
      ['report', '-i', data, '--stdio', '--sort', sort, '--percent-limit', String(limit)],
      {
        encoding: 'utf8',
        maxBuffer: 64 * 1024 * 1024,
      },
    );
    return r.status === 0 ? r.stdout : `perf report failed (${r.status}): ${r.stderr}`;
  };
  try {
    writeFileSync(
      join(dir, `${name}.txt`),
      `# by process and library\n${report('comm,dso', 0.2)}\n# by symbol\n${report('dso,sym', 0.15)}`,
    );
  } finally {
    removePerfTraces(dir, pids);
  }
}
