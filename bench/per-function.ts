/**
 * What bench/calls.ts and bench/allocations.ts share: per-process totals by function, how a
 * function's script is named, the tables, and the command line (`DIR|FILE... [--per N] [--top N]
 * [--markdown]`).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import minimist from 'minimist';
import { renderTable } from './report.js';

/** One process: a total, and per function (`name file:line`), most first. */
export interface PerFunction {
  readonly total: number;
  readonly functions: readonly (readonly [name: string, value: number])[];
}

/** A script as tables name it: `node:` URLs as they are, a file's path from `dist/` or `node_modules/`, or its name. */
export function scriptName(url: string): string {
  return url.startsWith('node:') ? url : url.replace(/^.*?\/(?=(?:dist|node_modules)\/)|^.*\//, '');
}

/** Sums `values` (function name, value) into a {@link PerFunction}. */
export function perFunction(values: Iterable<readonly [string, number]>): PerFunction {
  const byName = new Map<string, number>();
  let total = 0;
  for (const [name, value] of values) {
    byName.set(name, (byName.get(name) ?? 0) + value);
    total += value;
  }
  return { total, functions: [...byName].sort((a, b) => b[1] - a[1]) };
}

/** How one tool shows its values: `per` is 1, or the messages to divide by. */
export interface Units {
  /** A value as a table cell. */
  readonly format: (value: number, per: number) => string;
  /** The heading of the value column. */
  readonly unit: (per: number) => string;
}

export function renderPerFunction(
  name: string,
  values: PerFunction,
  units: Units,
  options: { readonly per: number; readonly top: number; readonly markdown: boolean },
): string {
  const { per, top, markdown } = options;
  const unit = units.unit(per);
  const f = (value: number): string => units.format(value, per);
  return (
    `${markdown ? '**' : '== '}${name}: ${f(values.total)} ${unit}${markdown ? '**' : ''}\n\n` +
    renderTable(
      ['function', unit],
      values.functions.slice(0, top).map(([fn, value]) => [fn, f(value)]),
      markdown,
    )
  );
}

/** The command line of a tool: each file given (or each file of a directory that `accepts`), summed and shown. */
export function perFunctionMain(
  tool: string,
  accepts: (file: string) => boolean,
  read: (file: string) => PerFunction,
  units: Units,
): void {
  const a = minimist(process.argv.slice(2), { string: ['per', 'top'], boolean: ['markdown'] });
  const paths = a._.map(String);
  const per = Number(a['per'] ?? 1);
  const top = Number(a['top'] ?? 25);
  const usage = (problem?: string): never => {
    if (problem !== undefined) process.stderr.write(`${tool}: ${problem}\n`);
    process.stderr.write(`usage: node --import tsx ${tool} DIR|FILE... [--per N] [--top N] [--markdown]\n`);
    process.exit(2);
  };
  if (paths.length === 0 || !(per >= 1) || !(top >= 1)) usage();
  exitOnEpipe();
  for (const { path, name } of inputFiles(paths, accepts, usage)) {
    const text = renderPerFunction(name, read(path), units, { per, top, markdown: a['markdown'] === true });
    process.stdout.write(text + '\n');
  }
}

/** Ends the process quietly when its output's reader goes away (piped into `head`): the rest is not wanted. */
export function exitOnEpipe(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

/**
 * The files a tool reads: each file given, and each file of a directory given (its subdirectories'
 * too: the benchmark writes one per node) that `accepts`, sorted and named from the directory. A
 * path that does not exist goes to `usage`, which does not return.
 */
export function inputFiles(
  paths: readonly string[],
  accepts: (file: string) => boolean,
  usage: (problem: string) => never,
): { path: string; name: string }[] {
  return paths.flatMap((p) => {
    if (!existsSync(p)) usage(`${p}: no such file or directory`);
    if (!statSync(p).isDirectory()) return [{ path: p, name: basename(p) }];
    return readdirSync(p, { recursive: true, encoding: 'utf8' })
      .filter((f) => accepts(basename(f)))
      .sort()
      .map((f) => ({ path: join(p, f), name: f }));
  });
}
