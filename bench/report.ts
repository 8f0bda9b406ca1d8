/**
 * Tables of the benchmark: medians over rounds per scenario, as aligned text or markdown, and the
 * issue's targets checked against them.
 */
import type { RunResult } from './measure.js';

/** A cell: a number (printed with the given decimals), text, or nothing (`-`). */
type Cell = number | string | null | undefined;

/** One column: header, how to get the cell from a scenario's runs, decimals for numbers. */
interface Column {
  readonly header: string;
  readonly cell: (runs: readonly RunResult[]) => Cell;
  readonly digits?: number;
}

export function median(xs: readonly (number | null | undefined)[]): number | null {
  const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

/** Median of a field over the runs that measured it. */
const med =
  (key: keyof RunResult) =>
  (runs: readonly RunResult[]): number | null =>
    median(runs.map((r) => r[key] as number | null | undefined));

function format(cell: Cell, digits = 0): string {
  if (cell === null || cell === undefined) return '-';
  if (typeof cell === 'string') return cell;
  return cell.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Renders rows as a markdown table or as aligned text columns. */
export function renderTable(
  headers: readonly string[],
  rows: readonly string[][],
  markdown: boolean,
): string {
  if (markdown) {
    const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
    return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n') + '\n';
  }
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

function tableOf(
  title: string,
  columns: readonly Column[],
  groups: readonly (readonly RunResult[])[],
  markdown: boolean,
): string {
  if (groups.length === 0) return '';
  const rows = groups.map((runs) => [
    runs[0]!.scenario,
    ...columns.map((c) => format(c.cell(runs), c.digits)),
  ]);
  return `${markdown ? `**${title}**` : `== ${title}`}\n\n${renderTable(['scenario', ...columns.map((c) => c.header)], rows, markdown)}\n`;
}

const okCount = (runs: readonly RunResult[]): string => `${runs.filter((r) => r.ok).length}/${runs.length}`;

const TRAFFIC: readonly Column[] = [
  { header: 'nodes', cell: (r) => r[0]!.nodes },
  { header: 'msgs', cell: (r) => `${r[0]!.messages}${r[0]!.rate > 0 ? ` @${r[0]!.rate}/s` : ''}` },
  { header: 'ok', cell: okCount },
  { header: 'deliv(min)', cell: (r) => Math.min(...r.map((x) => x.delivery ?? 0)), digits: 3 },
  { header: 'dups', cell: (r) => Math.max(...r.map((x) => x.dups ?? 0)) },
  { header: 'msg/s', cell: med('throughput') },
  { header: 'p50 ms', cell: med('p50'), digits: 1 },
  { header: 'p95 ms', cell: med('p95'), digits: 1 },
  { header: 'p99 ms', cell: med('p99'), digits: 1 },
  { header: 'max ms', cell: med('max'), digits: 1 },
  { header: 'stdin taken ms', cell: med('sendMs'), digits: 0 },
  {
    header: 'disturbed',
    cell: (r) =>
      `${r.filter((x) => Math.max(x.otherCores ?? 0, x.otherCoresStart ?? 0) >= 0.2).length}/${r.length}`,
  },
];

const RESOURCES: readonly Column[] = [
  { header: 'peakRSS max MB', cell: med('hwmMaxMB'), digits: 1 },
  { header: 'peakRSS mean MB', cell: med('hwmMeanMB'), digits: 1 },
  { header: 'CPU s msgs (all)', cell: med('cpuPhaseS'), digits: 2 },
  { header: 'CPU s/node mean', cell: med('cpuPhasePerNodeMeanS'), digits: 3 },
  { header: 'CPU s/node max', cell: med('cpuPhasePerNodeMaxS'), digits: 3 },
  { header: 'CPU s sender', cell: med('cpuSenderS'), digits: 3 },
  { header: 'CPU ms/msg (all)', cell: med('cpuPerMsgMs'), digits: 2 },
  { header: 'CPU s (all, start incl.)', cell: med('cpuAllS'), digits: 2 },
  { header: 'bench CPU s', cell: med('benchCpuS'), digits: 2 },
  { header: 'other procs, cores', cell: med('otherCores'), digits: 2 },
  { header: 'wall s', cell: med('wallS'), digits: 1 },
];

const WIRE: readonly Column[] = [
  { header: 'links', cell: med('links') },
  {
    header: 'degree mean (min-max)',
    cell: (r) =>
      `${format(med('degreeMean')(r), 1)} (${format(med('degreeMin')(r))}-${format(med('degreeMax')(r))})`,
  },
  { header: 'hops', cell: med('hops') },
  { header: 'sends/msg (wire)', cell: med('sendsPerMsg'), digits: 1 },
  { header: 'sends/msg (flood est.)', cell: med('sendsEstimate'), digits: 0 },
  {
    header: 'sends/link',
    cell: (r) => {
      const s = med('sendsPerMsg')(r);
      const l = med('links')(r);
      return s === null || l === null || l === 0 ? null : s / l;
    },
    digits: 2,
  },
  { header: 'write() calls/msg', cell: med('writesPerMsg'), digits: 1 },
  { header: 'socket writes/msg (est.)', cell: med('socketWritesPerMsg'), digits: 2 },
  { header: 'frame B', cell: med('frameBytes') },
  { header: 'links lost', cell: (r) => Math.max(...r.map((x) => x.dropsInPhase ?? 0)) },
];

const STARTUP: readonly Column[] = [
  { header: 'nodes', cell: (r) => r[0]!.nodes },
  { header: 'start ms/node mean', cell: med('startMsMean'), digits: 0 },
  { header: 'start ms/node max', cell: med('startMsMax'), digits: 0 },
  { header: 'all ready ms', cell: med('allReadyMs'), digits: 0 },
  { header: 'connected ms', cell: med('connectMs'), digits: 0 },
  { header: 'links settled ms', cell: med('settledMs'), digits: 0 },
  { header: 'links', cell: med('links') },
  { header: 'one-sided links', cell: med('asymmetric') },
  { header: 'other procs, cores', cell: med('otherCoresStart'), digits: 2 },
];

const IDLE: readonly Column[] = [
  { header: 'nodes', cell: (r) => r[0]!.nodes },
  { header: 'ok', cell: okCount },
  { header: 'RSS mean MB', cell: med('rssMeanMB'), digits: 1 },
  { header: 'RSS max MB', cell: med('rssMaxMB'), digits: 1 },
  { header: 'peakRSS max MB', cell: med('hwmMaxMB'), digits: 1 },
  { header: 'CPU s idle (all)', cell: med('cpuPhaseS'), digits: 3 },
  { header: 'links', cell: med('links') },
  { header: 'degree mean', cell: med('degreeMean'), digits: 1 },
  { header: 'other procs, cores', cell: med('otherCores'), digits: 2 },
];

/** Groups runs by scenario, in the order first seen. */
export function byScenario(runs: readonly RunResult[]): RunResult[][] {
  const groups = new Map<string, RunResult[]>();
  for (const r of runs) groups.set(r.scenario, [...(groups.get(r.scenario) ?? []), r]);
  return [...groups.values()];
}

/** Every table of the benchmark. */
export function renderReport(runs: readonly RunResult[], markdown: boolean): string {
  const groups = byScenario(runs);
  const traffic = groups.filter((g) => g[0]!.messages > 0);
  const idle = groups.filter((g) => g[0]!.messages === 0);
  return [
    tableOf(
      'Delivery and latency (medians over rounds; deliv and dups: worst round)',
      TRAFFIC,
      traffic,
      markdown,
    ),
    tableOf('CPU and memory per run (from /proc, message phase unless said)', RESOURCES, traffic, markdown),
    tableOf('Links and wire sends per message (message phase)', WIRE, traffic, markdown),
    tableOf('Start-up and time to connected', STARTUP, groups, markdown),
    tableOf('Idle: connected, no traffic', IDLE, idle, markdown),
  ].join('');
}

/** A warning when other programs used the machine during a run. */
function busy(r: RunResult): string {
  const worst = Math.max(r.otherCores ?? 0, r.otherCoresStart ?? 0);
  return worst >= 0.2
    ? ` [other processes used ${format(worst, 2)} of the cores meanwhile: figures disturbed]`
    : '';
}

/** One line per run, printed as the run ends. */
export function runLine(r: RunResult): string {
  const f = (x: number | null | undefined, d = 0): string => format(x, d);
  if (r.error !== undefined && r.delivery === undefined)
    return `  ${r.scenario} r${r.round}: FAILED ${r.error}`;
  if (r.messages === 0) {
    return `  ${r.scenario} r${r.round}: ok rss mean ${f(r.rssMeanMB, 1)} MB max ${f(r.rssMaxMB, 1)} MB, idle cpu ${f(r.cpuPhaseS, 3)} s, links ${f(r.links)}, wall ${f(r.wallS, 1)} s${busy(r)}`;
  }
  return (
    `  ${r.scenario} r${r.round}: ${r.ok ? 'ok' : 'FAIL'} deliv ${f(r.delivery, 3)} dups ${f(r.dups)} ` +
    `${f(r.throughput)} msg/s p50 ${f(r.p50, 1)} p99 ${f(r.p99, 1)} ms, rss ${f(r.hwmMaxMB, 1)} MB, ` +
    `cpu ${f(r.cpuPhaseS, 2)} s, links ${f(r.links)} sends/msg ${f(r.sendsPerMsg, 1)}, wall ${f(r.wallS, 1)} s` +
    busy(r) +
    (r.error !== undefined ? `\n    ${r.error}` : '') +
    (r.notes.length > 0 ? `\n    ${r.notes.join('; ')}` : '')
  );
}

/** Reference throughputs (msg/s) for the issue's relative targets. */
export interface References {
  readonly source: string;
  readonly rawFlood: Readonly<Record<string, number>>;
  readonly libp2p: Readonly<Record<string, number>>;
}

/**
 * The anchors of ../shared/bench/README.md (3 rounds, medians), measured once on the harness's
 * machine: a faster machine runs raw-flood faster too (3x on one seen here), so ratios to them
 * flatter the node there; --compare gives the ratios of one run.
 */
export const README_ANCHORS: References = {
  source:
    'the anchor figures of ../shared/bench/README.md, from another run and maybe another machine: --compare gives same-run ratios',
  rawFlood: { mesh3: 21743, line10: 7043, random20: 2960 },
  libp2p: { mesh3: 615 },
};

/**
 * The issue's throughput targets with encryption and signatures on (they are): at least this share
 * of the minimal flood (raw-flood), and in mesh3 at least this multiple of js-libp2p + gossipsub.
 */
export const TARGETS = { ofRawFlood: 0.4, ofLibp2p: 10 } as const;

/** The issue's targets, each with what this run measured and whether it is met. */
export function renderTargets(runs: readonly RunResult[], refs: References, markdown: boolean): string {
  const groups = new Map(byScenario(runs).map((g) => [g[0]!.scenario, g]));
  const rows: string[][] = [];
  const verdict = (ok: boolean | null): string => (ok === null ? 'n/a' : ok ? 'met' : 'NOT met');
  const traffic = [...groups.values()].filter((g) => g[0]!.messages > 0);
  if (traffic.length > 0) {
    const minDeliv = Math.min(...traffic.flatMap((g) => g.map((r) => r.delivery ?? 0)));
    const worst = traffic.flatMap((g) => g).find((r) => (r.delivery ?? 0) === minDeliv)!;
    rows.push([
      '100 % delivery in every scenario',
      `min ${format(minDeliv, 3)} (${worst.scenario})`,
      verdict(minDeliv >= 1),
    ]);
    const dups = Math.max(...traffic.flatMap((g) => g.map((r) => r.dups ?? 0)));
    rows.push(['0 duplicates', String(dups), verdict(dups === 0)]);
  }
  for (const name of ['mesh3', 'random20']) {
    const g = groups.get(name);
    const ref = refs.rawFlood[name];
    if (g === undefined || ref === undefined) continue;
    const thr = med('throughput')(g);
    rows.push([
      `${name}: >= ${TARGETS.ofRawFlood}x raw-flood throughput`,
      thr === null ? '-' : `${format(thr)} msg/s = ${format(thr / ref, 2)}x of ${format(ref)}`,
      verdict(thr === null ? false : thr >= TARGETS.ofRawFlood * ref),
    ]);
    const lib = refs.libp2p[name];
    if (lib !== undefined) {
      rows.push([
        `${name}: >= ${TARGETS.ofLibp2p}x js-libp2p throughput`,
        thr === null ? '-' : `${format(thr)} msg/s = ${format(thr / lib, 1)}x of ${format(lib)}`,
        verdict(thr === null ? false : thr >= TARGETS.ofLibp2p * lib),
      ]);
    }
  }
  const paced = [...groups.values()].find((g) => g[0]!.rate > 0 && g[0]!.nodes === 20);
  if (paced !== undefined) {
    const p99 = med('p99')(paced);
    rows.push([
      `random20 at ${paced[0]!.rate} msg/s: p99 <= 25 ms`,
      `p99 ${format(p99, 1)} ms`,
      verdict(p99 === null ? false : p99 <= 25),
    ]);
  }
  const idle = [...groups.values()].find((g) => g[0]!.messages === 0);
  if (idle !== undefined) {
    const mean = med('rssMeanMB')(idle);
    const max = med('rssMaxMB')(idle);
    rows.push([
      'idle RSS per node <= 50 MB',
      `mean ${format(mean, 1)} MB, max ${format(max, 1)} MB`,
      verdict(max === null ? null : max <= 50),
    ]);
  }
  const large = [...groups.values()].find((g) => g[0]!.nodes >= 100 && g[0]!.messages > 0);
  if (large !== undefined) {
    const d = Math.min(...large.map((r) => r.delivery ?? 0));
    rows.push([`${large[0]!.nodes} nodes: 100 % delivery`, format(d, 3), verdict(d >= 1)]);
    const sends = med('sendsPerMsg')(large);
    const links = med('links')(large);
    rows.push([
      `${large[0]!.nodes} nodes: wire sends per broadcast near the number of links`,
      `${format(sends, 1)} sends for ${format(links)} links (${format(sends !== null && links ? sends / links : null, 2)}x)`,
      // "near": within 10 %; a flood that sends each message both ways on most links is at 2x.
      verdict(sends === null || !links ? false : d >= 1 && sends <= 1.1 * links),
    ]);
  }
  if (rows.length === 0) return '';
  const title = `Targets of the issue (throughput against ${refs.source})`;
  return `${markdown ? `**${title}**` : `== ${title}`}\n\n${renderTable(['target', 'measured', ''], rows, markdown)}\n`;
}
