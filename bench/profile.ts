/**
 * Summarises V8 CPU profiles (`.cpuprofile`, as written by `node --cpu-prof`, e.g. by
 * `npm run bench -- --profile DIR`): where the time went, by function (self and total) and by area
 * (the project's code, RxJS, lru-cache, Node internals, GC, idle).
 *
 *   node --import tsx bench/profile.ts DIR|FILE... [--window BENCH.json] [--top N] [--markdown]
 *
 * With `--window`, only the samples inside the message phase of the run in that benchmark result are
 * counted (profiles and benchmark share the monotonic clock), so start-up does not drown the phase.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import minimist from 'minimist';
import { exitOnEpipe, inputFiles } from './per-function.js';
import { renderTable } from './report.js';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Time (µs) per function and per area over a set of profiles. */
export interface Summary {
  totalUs: number;
  readonly self: Map<string, number>;
  readonly total: Map<string, number>;
  readonly areas: Map<string, number>;
}

/** Which part of the program a frame belongs to. */
export function area(cf: CallFrame): string {
  const { functionName: fn, url } = cf;
  if (fn === '(idle)') return 'idle (waiting for I/O)';
  if (fn === '(garbage collector)') return 'garbage collector';
  if (fn === '(program)') return 'V8/native, no JS frame (syscalls, libuv)';
  if (url.includes('/node_modules/rxjs/')) return 'rxjs';
  if (url.includes('/node_modules/lru-cache/')) return 'lru-cache';
  if (url.includes('/node_modules/')) return 'other dependencies';
  if (url.includes('/dist/') || url.includes('/lib/')) return 'p2p (dist/)';
  if (url.startsWith('node:')) return 'Node internals (streams, net, fs)';
  if (url === '') return `native: ${fn || '(anonymous)'}`;
  return 'other';
}

function keyOf(cf: CallFrame): string {
  const file = cf.url.replace(/^file:\/\//, '').replace(/^.*\/(dist|lib|node_modules)\//, '$1/');
  return `${cf.functionName || '(anonymous)'} ${file ? `${file}:${cf.lineNumber + 1}` : ''}`.trim();
}

export function summarise(profiles: readonly CpuProfile[], window?: readonly [number, number]): Summary {
  const out: Summary = { totalUs: 0, self: new Map(), total: new Map(), areas: new Map() };
  const add = (m: Map<string, number>, k: string, v: number): void => void m.set(k, (m.get(k) ?? 0) + v);
  for (const p of profiles) {
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    let t = p.startTime;
    for (let i = 0; i < p.samples.length; i++) {
      const dt = p.timeDeltas[i] ?? 0;
      t += dt;
      if (window !== undefined && (t < window[0] || t > window[1])) continue;
      const node = byId.get(p.samples[i]!);
      if (node === undefined) continue;
      out.totalUs += dt;
      add(out.self, keyOf(node.callFrame), dt);
      add(out.areas, area(node.callFrame), dt);
      const seen = new Set<string>();
      for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
        const k = keyOf(byId.get(id)!.callFrame);
        if (seen.has(k)) continue; // recursion: count once
        seen.add(k);
        add(out.total, k, dt);
      }
    }
  }
  return out;
}

export function render(s: Summary, top: number, markdown: boolean): string {
  const pct = (us: number): string => `${((100 * us) / Math.max(1, s.totalUs)).toFixed(1)} %`;
  const ms = (us: number): string => (us / 1000).toFixed(0);
  const busy = s.totalUs - (s.areas.get('idle (waiting for I/O)') ?? 0);
  const rows = (m: Map<string, number>, skip: (k: string) => boolean): string[][] =>
    [...m]
      .filter(([k]) => !skip(k))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, us]) => [k, ms(us), pct(us), `${((100 * us) / Math.max(1, busy)).toFixed(1)} %`]);
  const structural = (k: string): boolean => /^\((root|program|idle|garbage collector)\)/.test(k);
  const h = (t: string): string => (markdown ? `**${t}**\n\n` : `== ${t}\n\n`);
  return (
    h(`Areas (${ms(s.totalUs)} ms sampled, ${ms(busy)} ms busy)`) +
    renderTable(
      ['area', 'ms', 'of all', 'of busy'],
      rows(s.areas, () => false),
      markdown,
    ) +
    '\n' +
    h('Self time by function') +
    renderTable(
      ['function', 'ms', 'of all', 'of busy'],
      rows(s.self, () => false),
      markdown,
    ) +
    '\n' +
    h('Total time by function (self + callees)') +
    renderTable(['function', 'ms', 'of all', 'of busy'], rows(s.total, structural), markdown)
  );
}

function main(): void {
  const a = minimist(process.argv.slice(2), { string: ['window', 'top'], boolean: ['markdown'] });
  const paths = a._.map(String);
  const usage = (problem?: string): never => {
    if (problem !== undefined) process.stderr.write(`bench/profile.ts: ${problem}\n`);
    process.stderr.write(
      'usage: node --import tsx bench/profile.ts DIR|FILE... [--window BENCH.json] [--top N]\n',
    );
    process.exit(2);
  };
  if (paths.length === 0) usage();
  exitOnEpipe();
  let window: [number, number] | undefined;
  if (typeof a['window'] === 'string') {
    if (!existsSync(a['window'])) usage(`${a['window']}: no such file or directory`);
    const saved = JSON.parse(readFileSync(a['window'], 'utf8')) as { runs: { phaseUs?: [number, number] }[] };
    window = saved.runs.find((r) => r.phaseUs !== undefined)?.phaseUs;
    if (window === undefined) throw new Error(`${a['window']}: no run with a phase window`);
  }
  const list = inputFiles(paths, (f) => f.endsWith('.cpuprofile'), usage).map((f) => f.path);
  const profiles = list.map((f) => JSON.parse(readFileSync(f, 'utf8')) as CpuProfile);
  process.stdout.write(
    `${list.length} profile(s): ${list.map((f) => basename(f)).join(', ')}` +
      `${window ? `; message phase only (${((window[1] - window[0]) / 1000).toFixed(0)} ms)` : ''}\n\n`,
  );
  process.stdout.write(render(summarise(profiles, window), Number(a['top'] ?? 25), a['markdown'] === true));
}

main();
