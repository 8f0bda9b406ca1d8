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
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { perFunction, perFunctionMain, scriptName, type PerFunction } from './per-function.js';

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
export type Allocations = PerFunction;

/**
 * Sums a profile's bytes per function: by its name (or `(anonymous)`), its script (see
 * {@link scriptName}; V8's built-ins have none) and its line.
 */
export function sumAllocations(profile: HeapProfile): Allocations {
  const bytes: [string, number][] = [];
  const stack: HeapNode[] = [profile.head];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    // The sampler's own work (stopping it builds the profile): not the process's.
    if (node.callFrame.url.endsWith('/heap-sampling.mjs')) continue;
    stack.push(...node.children);
    if (node.selfSize === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url === '' ? '(built-in)' : `${scriptName(url)}:${lineNumber + 1}`;
    bytes.push([`${functionName || '(anonymous)'} ${where}`, node.selfSize]);
  }
  return perFunction(bytes);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  perFunctionMain(
    'bench/allocations.ts',
    (f) => f.endsWith('.heapprofile'),
    (file) => sumAllocations(JSON.parse(readFileSync(file, 'utf8')) as HeapProfile),
    {
      format: (bytes, per) =>
        per === 1 ? `${(bytes / 1024).toFixed(0)} KiB` : `${(bytes / per).toFixed(0)} B`,
      unit: (per) => (per === 1 ? 'allocated' : 'allocated per message'),
    },
  );
}
