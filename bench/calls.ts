/**
 * Counts JavaScript calls per process from V8's precise coverage, as Node writes it at exit into
 * the directory named by `NODE_V8_COVERAGE` (e.g. by `npm run bench -- --scenario mesh3 --calls
 * DIR`): per process, the calls in all and the functions called most, optionally per message.
 *
 *   node --import tsx bench/calls.ts DIR|FILE... [--per N] [--top N] [--markdown]
 *
 * A message's path runs mostly unoptimised in a burst (README, Performance), where every call
 * costs in full. The counts are exact, and move only with what timing changes (how reads and
 * packs group messages, pings, repairs): a few calls per message between runs, so they show what
 * a change to the message path saves without a timed run. The counts cover the whole life of the
 * process: start-up adds a few thousand calls, spread over functions that run once.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { perFunction, perFunctionMain, scriptName, type PerFunction } from './per-function.js';

/** What Node writes per process: V8's `Profiler.takePreciseCoverage` result (call counts on). */
export interface Coverage {
  readonly result: readonly {
    readonly url: string;
    readonly functions: readonly {
      readonly functionName: string;
      /** The first range is the whole function; its count is the number of calls. */
      readonly ranges: readonly {
        readonly startOffset: number;
        readonly endOffset: number;
        readonly count: number;
      }[];
    }[];
  }[];
}

/** Calls of one process: in all, and per function (`name file:line`), most called first. */
export type CallCounts = PerFunction;

/**
 * Sums the calls in `coverage`. A function is named by its name (or `(anonymous)`), its script (see
 * {@link scriptName}) and, when `lineOf` can read the script as it ran (its length is the length
 * the coverage gives the script's top level), its line; otherwise its character offset.
 */
export function countCalls(
  coverage: Coverage,
  lineOf: (url: string, offset: number, length: number | undefined) => number | undefined = () => undefined,
): CallCounts {
  const calls: [string, number][] = [];
  for (const script of coverage.result) {
    const file = scriptName(script.url);
    const length = script.functions[0]?.ranges[0]?.endOffset;
    for (const fn of script.functions) {
      const range = fn.ranges[0];
      if (range === undefined || range.count === 0) continue;
      const line = lineOf(script.url, range.startOffset, length);
      calls.push([
        `${fn.functionName || '(anonymous)'} ${file}:${line ?? `@${range.startOffset}`}`,
        range.count,
      ]);
    }
  }
  return perFunction(calls);
}

/**
 * Line numbers (1-based) of offsets in `file://` scripts, each file read once; undefined for a file
 * that is gone, or whose length is not the one it had when it ran (rebuilt since).
 */
export function fileLines(): (url: string, offset: number, length: number | undefined) => number | undefined {
  const files = new Map<string, { readonly length: number; readonly lines: number[] } | undefined>();
  return (url, offset, length) => {
    if (!url.startsWith('file://')) return undefined;
    if (!files.has(url)) {
      try {
        const text = readFileSync(fileURLToPath(url), 'utf8');
        const lines = [0];
        for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) lines.push(i + 1);
        files.set(url, { length: text.length, lines });
      } catch {
        files.set(url, undefined);
      }
    }
    const file = files.get(url);
    if (file === undefined || (length !== undefined && length !== file.length)) return undefined;
    const { lines } = file;
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

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const lineOf = fileLines();
  perFunctionMain(
    'bench/calls.ts',
    (f) => f.startsWith('coverage-') && f.endsWith('.json'),
    (file) => countCalls(JSON.parse(readFileSync(file, 'utf8')) as Coverage, lineOf),
    {
      format: (calls, per) => (per === 1 ? String(calls) : (calls / per).toFixed(2)),
      unit: (per) => (per === 1 ? 'calls' : 'calls per message'),
    },
  );
}
