/**
 * Sums heap allocation profiles (`.heapprofile`, as bench/heap-sampling.mjs writes them for `npm run
 * bench -- --allocations DIR`): per process, the bytes allocated in all and by the function that
 * allocated them (its own allocations, not its callees'), optionally per message.
 *
 *   node --import tsx bench/allocations.ts DIR|FILE... [--per N] [--top N] [--markdown]
 *
 * The objects garbage collection freed are counted too: in a burst nearly all of a node's
 * collection work is young-generation scavenges (README, Performance), whose number follows the
 * bytes allocated. The profile is sampled (one sample per 1 KiB on average, scaled up by V8): small
 * figures are estimates. Start-up is included (Node's module loading: `compileForInternalLoader`
 * and the like).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import minimist from 'minimist';
import { renderTable } from './report.js';

/** What V8's `HeapProfiler.stopSampling` returns: a tree of call frames, each with its own bytes. */
export interface HeapProfile {
  readonly head: HeapNode;
}

interface HeapNode {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly selfSize: number;
  readonly children: readonly HeapNode[];
}

/** Bytes allocated by one process: in all, and per function (`name file:line`), most first. */
export interface Allocations {
  readonly total: number;
  readonly functions: readonly (readonly [name: string, bytes: number])[];
}

/**
 * Sums a profile's bytes per function: by its name (or `(anonymous)`), its script (`node:` URLs as
 * they are, a file's path from `dist/` or `node_modules/`, or its name; V8's built-ins have none) and
 * its line.
 */
export function sumAllocations(profile: HeapProfile): Allocations {
  const byName = new Map<string, number>();
  let total = 0;
  const stack: HeapNode[] = [profile.head];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    stack.push(...node.children);
    if (node.selfSize === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const file = url.startsWith('node:') ? url : url.replace(/^.*\/(?=(?:dist|node_modules)\/)|^.*\//, '');
    const name = `${functionName || '(anonymous)'} ${file === '' ? '(built-in)' : `${file}:${lineNumber + 1}`}`;
    byName.set(name, (byName.get(name) ?? 0) + node.selfSize);
    total += node.selfSize;
  }
  return { total, functions: [...byName].sort((a, b) => b[1] - a[1]) };
}

export function render(name: string, a: Allocations, per: number, top: number, markdown: boolean): string {
  const f = (bytes: number): string =>
    per === 1 ? `${(bytes / 1024).toFixed(0)} KiB` : `${(bytes / per).toFixed(0)} B`;
  const unit = per === 1 ? 'allocated' : 'bytes per message';
  return (
    `${markdown ? '**' : '== '}${name}: ${f(a.total)} ${per === 1 ? 'allocated' : 'per message'}${markdown ? '**' : ''}\n\n` +
    renderTable(
      ['function', unit],
      a.functions.slice(0, top).map(([fn, bytes]) => [fn, f(bytes)]),
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
      'usage: node --import tsx bench/allocations.ts DIR|FILE... [--per N] [--top N] [--markdown]\n',
    );
    process.exit(2);
  }
  const list = paths.flatMap((p) =>
    statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => f.endsWith('.heapprofile'))
          .sort()
          .map((f) => join(p, f))
      : [p],
  );
  for (const file of list) {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as HeapProfile;
    process.stdout.write(
      render(basename(file), sumAllocations(profile), per, top, a['markdown'] === true) + '\n',
    );
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();
