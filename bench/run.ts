/**
 * `npm run bench`: the project's own benchmark. Starts real `bin/p2p` processes on 127.0.0.1, drives
 * them through stdin and `--json`, measures them from `/proc` and `ss`, and prints per scenario:
 * delivery, duplicates, throughput, latency percentiles, CPU and memory per node, links and wire
 * sends per message, start-up and time to connected; then the pipeline micro-benchmark, and the
 * issue's targets. `--compare` also runs the shared side-by-side harness (../shared/bench).
 *
 *   npm run bench                       # everything (~7-10 min on 2 cores)
 *   npm run bench -- --quick            # one short round of each (~2 min)
 *   npm run bench -- --scenario mesh3,paced20 --rounds 5
 *   npm run bench -- --micro            # the in-process pipeline micro-benchmark only
 *   npm run bench -- --compare          # then the shared harness: p2p, raw-flood, seed, libp2p
 *   npm run bench -- --help
 *
 * Linux only. Loopback only. Ports 20000-29999 (checked free). Every node is killed by pid at the end
 * of its run, and by the next run if this one was SIGKILLed.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import minimist from 'minimist';
import { runOnce, type RunResult, type RunSettings } from './measure.js';
import { perfNodeFlags, perfProblem } from './perf.js';
import {
  MICRO_DEFAULTS,
  renderMicro,
  runPipelineBench,
  type MicroOptions,
  type MicroRow,
} from './pipeline.js';
import { killAllNow, machineBusyS, nowNs, PortRange, reapStale } from './procs.js';
import {
  median,
  README_ANCHORS,
  renderReport,
  renderTable,
  renderTargets,
  runLine,
  TARGETS,
} from './report.js';
import {
  DEFAULT_SCENARIOS,
  QUICK_SCENARIOS,
  scenario,
  type Scenario,
  type ScenarioDefaults,
} from './scenarios.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const USAGE = `usage: npm run bench -- [options]

  --scenario S[,S]     ${DEFAULT_SCENARIOS.join(',')} (default: all of them);
                       also meshN, lineN, randomN, pacedN (randomN at --rate), idleN
  --messages M         messages of a burst run (default 2000)
  --messages-large M   messages of a random run with 30 nodes or more (default 40)
  --rate-large R       its rate, messages/s (default 2; 0 = burst)
  --paced-messages M   messages of a paced run (default 200)
  --rate R             messages/s of a paced run (default 20)
  --rounds R           rounds of each scenario below 30 nodes (default 3); medians are reported
  --rounds-large R     rounds of larger scenarios (default 1)
  --size B             bytes of each message text (default 100)
  --seed N             seed of the random graphs (default 1: the shared harness's graphs)
  --quick              1 round, 500 messages (100 paced), 40 nodes instead of 100: ~2 min
  --micro              only the in-process pipeline micro-benchmark
  --no-micro           skip the micro-benchmark in a full run
  --compare            afterwards, run ../shared/bench/run.mjs: p2p, raw-flood, seed_p2p.py
                       (and libp2p-chat when its peers/node_modules is installed)
  --shared DIR         the shared harness directory (default ../shared/bench)
  --compare-rounds R   rounds of the harness (default: --rounds)
  --bin PATH           the node to run (default bin/p2p)
  --node-arg ARG       add ARG to every node's command line (repeatable), e.g. --node-arg=--ephemeral
  --profile DIR        run every node under node --cpu-prof, profiles in DIR
  --profile-interval U its sampling interval, µs (default 100)
  --calls DIR          count the JavaScript calls of every node this benchmark starts
                       (V8 coverage, written at exit into DIR/SCENARIO-rROUND-nNODE;
                       summed by bench/calls.ts)
  --allocations DIR    sample their heap allocations, freed objects included (written
                       likewise; summed by bench/allocations.ts)
  --perf DIR           Linux perf record of the whole machine over each message phase, the
                       nodes under --perf-basic-prof (JavaScript named): DIR/SCENARIO-rROUND.data
                       and .txt (samples by process, library and symbol; needs perf and root
                       or kernel.perf_event_paranoid <= 0)
                       (--profile, --calls, --allocations and --perf slow the nodes down:
                       the figures of such a run are not the node's)
  --logs DIR           keep every node's stderr in DIR
  --out FILE           results as JSON (default .bench-out/bench-<time>.json)
  --markdown           print the tables as markdown too
  --port-base P, --port-end P   port range (default 20000-29999)
  --wait-quiet S       before each run, wait up to S seconds until other programs use less
                       than 0.15 of the cores (default 0: start at once)
  --verbose            progress of each run on stderr
  -h, --help           this text
`;

interface Options {
  scenarios: Scenario[];
  defaults: ScenarioDefaults;
  size: number;
  quick: boolean;
  micro: 'only' | 'yes' | 'no';
  microOptions: MicroOptions;
  compare: boolean;
  shared: string;
  compareRounds: number;
  settings: RunSettings;
  bin: string;
  waitQuietS: number;
  out: string;
  markdown: boolean;
}

function usageError(message: string): never {
  process.stderr.write(`bench: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function parseOptions(argv: readonly string[]): Options {
  const a = minimist([...argv], {
    string: [
      'scenario',
      'messages',
      'messages-large',
      'rate-large',
      'paced-messages',
      'rate',
      'rounds',
      'rounds-large',
      'size',
      'seed',
      'shared',
      'compare-rounds',
      'bin',
      'node-arg',
      'profile',
      'profile-interval',
      'calls',
      'allocations',
      'perf',
      'logs',
      'out',
      'port-base',
      'port-end',
      'wait-quiet',
    ],
    boolean: ['quick', 'micro', 'compare', 'markdown', 'verbose', 'help'],
    alias: { h: 'help' },
    unknown: (arg) =>
      arg.startsWith('-') ? usageError(`unknown option ${arg}`) : usageError(`unexpected ${arg}`),
  });
  if (a['help'] === true) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const quick = a['quick'] === true;
  const int = (name: string, fallback: number, min = 1): number => {
    const v: unknown = a[name];
    if (v === undefined) return fallback;
    const n = Number(Array.isArray(v) ? v.at(-1) : v);
    if (!Number.isInteger(n) || n < min)
      usageError(`--${name}: expected an integer >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  const defaults: ScenarioDefaults = {
    messages: int('messages', quick ? 500 : 2000),
    messagesLarge: int('messages-large', 40),
    rateLarge: int('rate-large', 2, 0),
    pacedMessages: int('paced-messages', quick ? 100 : 200),
    rate: int('rate', 20),
    rounds: int('rounds', quick ? 1 : 3),
    roundsLarge: int('rounds-large', 1),
    seed: int('seed', 1, 0),
  };
  const names = (
    typeof a['scenario'] === 'string'
      ? a['scenario']
      : (quick ? QUICK_SCENARIOS : DEFAULT_SCENARIOS).join(',')
  )
    .split(',')
    .filter((x) => x.length > 0);
  let scenarios: Scenario[];
  try {
    scenarios = names.map((name) => scenario(name, defaults));
  } catch (err) {
    usageError((err as Error).message);
  }
  const size = int('size', 100, 32);
  const bin = typeof a['bin'] === 'string' ? a['bin'] : 'bin/p2p';
  // A directory option: absent, or one non-empty path (minimist gives '' for a value left out, and
  // an array for a repeated option; resolve('') would be the working directory).
  const directory = (name: string): string | undefined => {
    const v: unknown = a[name];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v === '') usageError(`--${name}: expected one directory`);
    mkdirSync(resolve(v), { recursive: true });
    return resolve(v);
  };
  const profile = directory('profile');
  if (profile === undefined && a['profile-interval'] !== undefined)
    usageError('--profile-interval: only with --profile');
  const allocations = directory('allocations');
  const calls = directory('calls');
  const perf = directory('perf');
  const cannot = perf === undefined ? undefined : perfProblem(perf);
  if (cannot !== undefined) usageError(`--perf: Linux perf cannot record here: ${cannot}`);
  const nodeFlags = [
    ...(profile === undefined
      ? []
      : [
          '--cpu-prof',
          `--cpu-prof-dir=${profile}`,
          // A burst lasts ~0.1 s in mesh3: V8's default of one sample per millisecond is too coarse.
          `--cpu-prof-interval=${int('profile-interval', 100, 10)}`,
        ]),
    ...(allocations === undefined ? [] : ['--import', join(ROOT, 'bench', 'heap-sampling.mjs')]),
    ...(perf === undefined ? [] : perfNodeFlags(perf)),
  ];
  const command = nodeFlags.length === 0 ? [bin] : [process.execPath, ...nodeFlags, bin];
  const nodeArgs = ([] as unknown[]).concat(a['node-arg'] ?? []).map(String);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  // minimist reads --no-micro as micro=false, and an absent boolean as false too: look at argv.
  const micro = argv.includes('--no-micro') ? 'no' : a['micro'] === true ? 'only' : 'yes';
  return {
    scenarios,
    defaults,
    size,
    quick,
    micro,
    microOptions: quick ? { ...MICRO_DEFAULTS, frames: 20_000, reps: 3 } : MICRO_DEFAULTS,
    compare: a['compare'] === true,
    shared: resolve(ROOT, typeof a['shared'] === 'string' ? a['shared'] : '../shared/bench'),
    compareRounds: int('compare-rounds', defaults.rounds),
    settings: {
      command,
      cwd: ROOT,
      nodeArgs,
      ports: new PortRange(int('port-base', 20000, 1024), int('port-end', 29999, 1024)),
      size,
      readyTimeoutMs: 20_000,
      probeTimeoutMs: 60_000,
      settleMs: 1_000,
      settleMaxMs: 15_000,
      stallMs: quick ? 8_000 : 15_000,
      capMs: 180_000,
      idleMs: quick ? 3_000 : 5_000,
      logs: typeof a['logs'] === 'string' ? resolve(a['logs']) : undefined,
      traces: { calls, allocations, perf },
      verbose: a['verbose'] === true,
    },
    bin,
    waitQuietS: int('wait-quiet', 0, 0),
    out: resolve(ROOT, typeof a['out'] === 'string' ? a['out'] : `.bench-out/bench-${stamp}.json`),
    markdown: a['markdown'] === true,
  };
}

/** The commit and whether lib/ has changes not committed (read-only git). */
function build(bin: string): string {
  if (!resolve(ROOT, bin).startsWith(`${ROOT}/`)) return bin; // another tree: its path says which
  const git = (...args: string[]): string => {
    try {
      return execFileSync('git', ['-C', ROOT, ...args], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    } catch {
      return '';
    }
  };
  const head = git('rev-parse', '--short', 'HEAD') || 'unknown';
  const dirty = git('status', '--porcelain', '--', 'lib').split('\n').filter(Boolean).length;
  return `${bin} of ${head}${dirty > 0 ? ` + ${dirty} uncommitted change(s) in lib/` : ''}`;
}

function machine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  return `${cpus().length} x ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Linux, Node ${process.version}`;
}

/** Runs the shared harness as a child (its own tables on our stdout); resolves with its --out file. */
async function runHarness(o: Options, args: readonly string[], tag: string): Promise<string | undefined> {
  const out = o.out.replace(/\.json$/, `-${tag}.json`);
  // The harness runs bin/p2p without --host or a data dir: keep the nodes' state out of ~.
  const state = mkdtempSync(join(tmpdir(), 'p2p-bench-state-'));
  const full = [join(o.shared, 'run.mjs'), ...args, '--out', out, ...(o.markdown ? ['--markdown'] : [])];
  process.stdout.write(`\n$ node ${full.map((x) => (x.includes(' ') ? `'${x}'` : x)).join(' ')}\n`);
  const child = spawn(process.execPath, full, {
    cwd: ROOT,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, XDG_STATE_HOME: state },
  });
  const code = await new Promise<number | null>((done) => child.once('exit', (c) => done(c)));
  rmSync(state, { recursive: true, force: true });
  if (code !== 0 && code !== 1) {
    process.stderr.write(`bench: the shared harness exited with ${code}\n`);
    return undefined;
  }
  return existsSync(out) ? out : undefined;
}

interface HarnessRun {
  impl: string;
  scenario: string;
  throughput?: number | null;
  latP99?: number | null;
  rssNowMaxMB?: number | null;
}

function harnessRuns(file: string): HarnessRun[] {
  return (JSON.parse(readFileSync(file, 'utf8')) as { runs: HarnessRun[] }).runs;
}

/** Median of one field of one impl in one scenario of a harness --out file. */
function harnessMedian(
  runs: readonly HarnessRun[],
  impl: string,
  sc: string,
  key: keyof HarnessRun,
): number | null {
  return median(runs.filter((r) => r.impl === impl && r.scenario === sc).map((r) => r[key] as number | null));
}

/** p2p against the references within the same harness run: the issue's relative targets. */
function renderHarnessTargets(burstFile: string, pacedFile: string | undefined, markdown: boolean): string {
  const burst = harnessRuns(burstFile);
  const f = (x: number | null, d = 0): string =>
    x === null ? '-' : x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
  const verdict = (ok: boolean | null): string => (ok === null ? 'n/a' : ok ? 'met' : 'NOT met');
  const ratioOf = (p: number | null, r: number | null): number | null =>
    p !== null && r !== null ? p / r : null;
  const rows: string[][] = [];
  for (const sc of ['mesh3', 'line10', 'random20']) {
    const p = harnessMedian(burst, 'p2p', sc, 'throughput');
    const r = harnessMedian(burst, 'raw-flood', sc, 'throughput');
    const ratio = ratioOf(p, r);
    const target =
      sc === 'line10' ? '(no target)' : verdict(ratio === null ? null : ratio >= TARGETS.ofRawFlood);
    rows.push([`${sc} msg/s, p2p / raw-flood >= ${TARGETS.ofRawFlood}`, f(p), f(r), f(ratio, 2), target]);
  }
  // Against js-libp2p when the harness ran it.
  const ll = harnessMedian(burst, 'libp2p-chat', 'mesh3', 'throughput');
  if (ll !== null) {
    const lp = harnessMedian(burst, 'p2p', 'mesh3', 'throughput');
    const ratio = ratioOf(lp, ll);
    rows.push([
      `mesh3 msg/s, p2p / js-libp2p >= ${TARGETS.ofLibp2p}`,
      f(lp),
      f(ll),
      f(ratio, 1),
      verdict(ratio === null ? null : ratio >= TARGETS.ofLibp2p),
    ]);
  }
  if (pacedFile !== undefined) {
    const paced = harnessRuns(pacedFile);
    const p = harnessMedian(paced, 'p2p', 'random20', 'latP99');
    const r = harnessMedian(paced, 'raw-flood', 'random20', 'latP99');
    rows.push([
      'random20 paced p99 ms <= 25, against raw-flood',
      f(p, 1),
      f(r, 1),
      f(ratioOf(p, r), 2),
      verdict(p === null ? null : p <= 25),
    ]);
  }
  const ip = harnessMedian(burst, 'p2p', 'idle', 'rssNowMaxMB');
  const ir = harnessMedian(burst, 'raw-flood', 'idle', 'rssNowMaxMB');
  rows.push([
    'idle RSS max MB <= 50, against raw-flood',
    f(ip, 1),
    f(ir, 1),
    f(ratioOf(ip, ir), 2),
    verdict(ip === null ? null : ip <= 50),
  ]);
  const title = 'Targets against the references in the same harness run (medians)';
  return `${markdown ? `**${title}**` : `== ${title}`}\n\n${renderTable(['target', 'p2p', 'reference', 'ratio', ''], rows, markdown)}\n`;
}

/** Waits (at most `maxS`) until the rest of the machine has used under 0.15 cores for a second. */
async function waitQuiet(maxS: number): Promise<void> {
  const until = nowNs() + maxS * 1e9;
  let load: number;
  do {
    const b0 = machineBusyS();
    const c0 = process.cpuUsage();
    await new Promise((done) => setTimeout(done, 1000));
    const c1 = process.cpuUsage(c0);
    load = machineBusyS() - b0 - (c1.user + c1.system) / 1e6;
    if (load < 0.15) return;
  } while (nowNs() < until);
  process.stdout.write(`  (other programs still use ${load.toFixed(2)} cores; starting anyway)\n`);
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const t0 = nowNs();
  const stale = reapStale();
  if (stale > 0) process.stderr.write(`bench: killed ${stale} node(s) left by an aborted run\n`);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}: killing the nodes\n`);
      killAllNow();
      process.exit(130);
    });
  }
  if (o.micro !== 'only' && !existsSync(join(ROOT, 'dist', 'cli', 'main.js'))) {
    process.stderr.write('bench: dist/ is missing: run `npm run build` first (bin/p2p runs dist/)\n');
    return 2;
  }
  const label = build(o.bin);
  process.stdout.write(`p2p benchmark: ${machine()}\nnode under test: ${label}\n`);

  const runs: RunResult[] = [];
  let micro: MicroRow[] = [];
  if (o.micro !== 'only') {
    for (const s of o.scenarios) {
      process.stdout.write(`\n# ${s.name}: ${s.description}; ${s.rounds} round(s)\n`);
      for (let round = 1; round <= s.rounds; round++) {
        if (o.waitQuietS > 0) await waitQuiet(o.waitQuietS);
        const r = await runOnce(s, round, o.settings);
        runs.push(r);
        process.stdout.write(`${runLine(r)}\n`);
      }
    }
  }
  if (o.micro !== 'no') {
    process.stdout.write('\n# pipeline micro-benchmark\n');
    micro = await runPipelineBench(o.microOptions);
  }

  const report = (markdown: boolean): string =>
    (runs.length > 0 ? renderReport(runs, markdown) : '') +
    (micro.length > 0 ? renderMicro(micro, o.microOptions, markdown) : '') +
    (runs.length > 0 ? renderTargets(runs, README_ANCHORS, markdown) : '');
  process.stdout.write(`\n${report(false)}`);
  if (o.markdown) process.stdout.write(`\n${report(true)}`);

  mkdirSync(dirname(o.out), { recursive: true });
  const saved = {
    machine: machine(),
    build: label,
    when: new Date().toISOString(),
    argv: process.argv.slice(2),
    defaults: o.defaults,
    size: o.size,
    runs,
    micro,
  };
  writeFileSync(o.out, JSON.stringify(saved, null, 1));
  process.stdout.write(`bench: wrote ${o.out} (${((nowNs() - t0) / 1e9).toFixed(0)} s)\n`);

  if (o.compare) {
    if (!existsSync(join(o.shared, 'run.mjs'))) {
      process.stderr.write(`bench: --compare: no harness at ${o.shared}; skipped\n`);
    } else {
      const impls = [
        '--impl',
        `p2p=${o.settings.command.join(' ')}`,
        '--impl',
        'raw-flood',
        '--impl',
        'seed_p2p.py',
      ];
      if (existsSync(join(o.shared, 'peers', 'node_modules'))) impls.push('--impl', 'libp2p-chat');
      else
        process.stdout.write(
          `\n(libp2p-chat skipped: ${join(o.shared, 'peers', 'node_modules')} is not installed)\n`,
        );
      const rounds = String(o.compareRounds);
      const burst = await runHarness(
        o,
        [
          ...impls,
          '--scenario',
          'mesh3,line10,random20,idle',
          '--rounds',
          rounds,
          '--messages',
          String(o.defaults.messages),
        ],
        'compare',
      );
      const paced = await runHarness(
        o,
        [
          ...impls,
          '--scenario',
          'random20',
          '--rate',
          String(o.defaults.rate),
          '--rounds',
          rounds,
          '--messages',
          String(o.defaults.pacedMessages),
        ],
        'compare-paced',
      );
      if (burst !== undefined) process.stdout.write(`\n${renderHarnessTargets(burst, paced, o.markdown)}`);
    }
  }
  process.stdout.write(`bench: done in ${((nowNs() - t0) / 1e9).toFixed(0)} s\n`);
  const failed = runs.filter((r) => !r.ok).length;
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    killAllNow();
    console.error(err);
    process.exit(70);
  },
);
