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
 * - No Maglev (V8's mid-tier compiler; Node 24 turns it on, Node 22 has it off, Node 20's V8 is built
 *   without it): for the same reason, it compiled the message path in the burst. On Node 24, one
 *   shared-harness run (3 rounds, quiet machine): throughput 1.37x in mesh3 and 1.41x in random20
 *   with it off (set from here), CPU per message 0.69x and 0.67x.
 * - No "early" optimisation of tiny functions: Node's own (an argument validator) were optimised
 *   within seconds even in an idle node, and the first optimisation in a process pages in ~3.5 MB of
 *   TurboFan's code: idle RSS -2.8 MB.
 * - `--gc-memory-reducer-start-delay-ms=5000`: V8 shrinks the heap of a process gone quiet (a full GC
 *   that gives back the young generation's pages, ~2 MB here) 8 s after start by default; 5 s is past
 *   a node's start-up (handshakes, first peer lists).
 *
 * Measured and not set: a smaller young generation, for the RSS a burst leaves (V8 grows each
 * semi-space from 1 up to 16 MB under load and keeps them committed).
 * - `--max-semi-space-size` does nothing from here: V8 sizes the heap when the process starts, before
 *   these flags are set (a test allocating 3 million objects: the new space still grew to 32 MB with
 *   it set here to 1, and stayed at 2 MB with it on the command line).
 * - `--semi-space-growth-factor=1` does work from here (the same test: 2 MB; on the command line it
 *   did nothing, 32 MB): the semi-spaces stay at 1 MB. After the flood spec's 5,000 connection
 *   attempts the node kept 67.7 MB instead of 91.1 (baseline 50.4), 77.8 instead of 92.2 after a
 *   second flood; after a mesh3 burst of 2,000 messages 55.5-56.0 MB instead of 57.2-57.7. But a
 *   mesh3 receiver spent 17,600 instructions per message in the collector instead of 14,800-15,600
 *   (callgrind; 139,800 in all instead of 134,200-137,300, +2-4 %; the sender the same), while the
 *   throughput targets are at the edge and the memory ones met.
 * - `--memory-saver-mode` (V8 13, Node 24; V8 12 has no such flag), for the memory a burst leaves
 *   there: V8 13 keeps its grown heap resident, since its memory reducer takes an embedder
 *   allocation rate of zero for a high one and never runs in a process like this one
 *   (nodejs/node#66564; the idle node's `--trace-memory-reducer` says "high alloc" every 8 s).
 *   Repeated connection floods (spec/security/flood.spec.ts) leave 104 MB, then up to 206 MB after
 *   eight; with the flag 84 MB, flat. It works from here too, but makes V8 collect for memory
 *   throughout: `npm run bench` on Node 24, two A/B rounds, took 0.44 and 0.57 CPU s for mesh3
 *   instead of 0.37 and 0.39, random20 4.03 and 4.85 instead of 3.64 and 3.84.
 */
export function v8FlagsFor(v8Version: string): string[] {
  const major = Number.parseInt(v8Version, 10);
  const reducer = '--gc-memory-reducer-start-delay-ms=5000';
  if (major <= 11) return ['--interrupt-budget=1000000', '--max-bytecode-size-for-early-opt=0', reducer];
  return [
    '--invocation-count-for-turbofan=45000',
    '--invocation-count-for-early-optimization=1000000',
    '--no-maglev',
    reducer,
  ];
}
