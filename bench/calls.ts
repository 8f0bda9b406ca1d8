/**
 * Counts JavaScript calls per process from V8's precise coverage, as Node writes it at exit into
 * the directory named by `NODE_V8_COVERAGE` (e.g. by `npm run bench -- --scenario mesh3 --calls
 * DIR`): per process, the calls in all and the functions called most, optionally per message.
 *
 *   node --import tsx bench/calls.ts DIR|FILE... [--per N] [--top N] [--markdown]
 *
 * A message's path runs mostly unoptimised in a burst (README, Performance), where every call
 * costs in full; the counts are exact and the same on a busy machine as on a quiet one, so they
 * show what a change to the message path saves without a timed run. The counts cover the whole
 * life of the process: start-up adds a few thousand calls, spread over functions that run once.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import minimist from 'minimist';
import { renderTable } from './report.js';

/** What Node writes per process: V8's `Profiler.takePreciseCoverage` result (call counts on). */
export interface Coverage {
  readonly result: readonly {
    readonly url: string;
    readonly functions: readonly {
      readonly functionName: string;
      /** The first range is the whole function; its count is the number of calls. */
      readonly ranges: readonly { readonly startOffset: number; readonly count: number }[];
    }[];
  }[];
}

/** Calls of one process: in all, and per function (`name file:line`), most called first. */
export interface CallCounts {
  readonly total: number;
  readonly functions: readonly (readonly [name: string, calls: number])[];
}

/**
 * Sums the calls in `coverage`. A function is named by its name (or `(anonymous)`), its script
 * (`node:` URLs as they are, a file's path from `dist/` or `node_modules/`, or its name) and, when `lineOf` can read
 * the script, its line; otherwise its character offset.
 */
export function countCalls(
  coverage: Coverage,
  lineOf: (url: string, offset: number) => number | undefined = () => undefined,
): CallCounts {
  const byName = new Map<string, number>();
  let total = 0;
  for (const script of coverage.result) {
    // node:internal/... as it is; a file's path from dist/ or node_modules/, or its name.
    const file = script.url.startsWith('node:')
      ? script.url
      : script.url.replace(/^.*\/(?=(?:dist|node_modules)\/)|^.*\//, '');
    for (const fn of script.functions) {
      const range = fn.ranges[0];
      if (range === undefined || range.count === 0) continue;
      const line = lineOf(script.url, range.startOffset);
      const name = `${fn.functionName || '(anonymous)'} ${file}:${line ?? `@${range.startOffset}`}`;
      byName.set(name, (byName.get(name) ?? 0) + range.count);
      total += range.count;
    }
  }
  return { total, functions: [...byName].sort((a, b) => b[1] - a[1]) };
}

/** Line numbers (1-based) of offsets in `file://` scripts, each file read once. */
function fileLines(): (url: string, offset: number) => number | undefined {
  const starts = new Map<string, number[] | undefined>();
  return (url, offset) => {
    if (!url.startsWith('file://')) return undefined;
    let lines = starts.get(url);
    if (!starts.has(url)) {
      try {
        const text = readFileSync(fileURLToPath(url), 'utf8');
        lines = [0];
        for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) lines.push(i + 1);
      } catch {
        lines = undefined; // gone or rebuilt since: offsets instead
      }
      starts.set(url, lines);
    }
    if (lines === undefined) return undefined;
    let lo = 0;
    let hi = lines.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (lines[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo + 1;
  };
}

export function render(
  name: string,
  counts: CallCounts,
  per: number,
  top: number,
  markdown: boolean,
): string {
  const f = (calls: number): string => (per === 1 ? String(calls) : (calls / per).toFixed(2));
  const unit = per === 1 ? 'calls' : 'calls per message';
  return (
    `${markdown ? '**' : '== '}${name}: ${f(counts.total)} ${unit}${markdown ? '**' : ''}\n\n` +
    renderTable(
      ['function', unit],
      counts.functions.slice(0, top).map(([fn, calls]) => [fn, f(calls)]),
      markdown,
    )
  );
}

function main(): void {
  const a = minimist(process.argv.slice(2), { string: ['per', 'top'], boolean: ['markdown'] });
  const paths = a._.map(String);
  const per = Number(a['per'] ?? 1);
  const top = Number(a['top'] ?? 25);
  if (paths.length === 0 || !(per >= 1) || !(top >= 1)) {
    process.stderr.write(
      'usage: node --import tsx bench/calls.ts DIR|FILE... [--per N] [--top N] [--markdown]\n',
    );
    process.exit(2);
  }
  const list = paths.flatMap((p) =>
    statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => f.startsWith('coverage-') && f.endsWith('.json'))
          .sort()
          .map((f) => join(p, f))
      : [p],
  );
  const lineOf = fileLines();
  for (const file of list) {
    const counts = countCalls(JSON.parse(readFileSync(file, 'utf8')) as Coverage, lineOf);
    process.stdout.write(render(basename(file), counts, per, top, a['markdown'] === true) + '\n');
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();
