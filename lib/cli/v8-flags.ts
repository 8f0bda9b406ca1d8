/**
 * The V8 flags `bin/p2p` sets before it loads the CLI, for the V8 it runs on (`process.versions.v8`).
 * `v8.setFlagsFromString` prints "unrecognized flag" on stderr for a flag that V8 does not have (it
 * cannot be caught), and V8 renames its tiering flags between versions: each set here names only
 * flags its versions have (a spec checks the running one's).
 *
 * What they do (README, Performance):
 * - TurboFan later than by default (about 15 times): a node compiles much of its message path during
 *   its first burst otherwise, on the cores the burst needs; with many nodes on few cores (the
 *   benchmark, a lab) compiling cost more than it saved. Node 20 (V8 11): `--interrupt-budget`
 *   (default 67,584); Node 22 and later (V8 12+): `--invocation-count-for-turbofan` (default 3,000).
 *   On Node 22, random20 ran 1.47x and mesh3 1.16x with them than without (one harness run, 3
 *   rounds).
 * - No "early" optimisation of tiny functions: Node's own (an argument validator) were optimised
 *   within seconds even in an idle node, and the first optimisation in a process pages in ~3.5 MB of
 *   TurboFan's code: idle RSS -2.8 MB.
 * - `--gc-memory-reducer-start-delay-ms=5000`: V8 shrinks the heap of a process gone quiet (a full GC
 *   that gives back the young generation's pages, ~2 MB here) 8 s after start by default; 5 s is past
 *   a node's start-up (handshakes, first peer lists).
 */
export function v8FlagsFor(v8Version: string): string[] {
  const major = Number.parseInt(v8Version, 10);
  const reducer = '--gc-memory-reducer-start-delay-ms=5000';
  if (major <= 11) return ['--interrupt-budget=1000000', '--max-bytecode-size-for-early-opt=0', reducer];
  return [
    '--invocation-count-for-turbofan=45000',
    '--invocation-count-for-early-optimization=1000000',
    reducer,
  ];
}
