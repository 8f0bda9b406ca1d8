/**
 * The benchmark's scenarios: which nodes, which peers each is given on its command line, who sends,
 * and how (a burst, a paced chat, or no traffic).
 *
 * `mesh3`, `line10`, `random20` and `idle10` give the same graphs as the shared harness
 * (`../shared/bench/run.mjs`, seed 1), so the figures of both can be read side by side.
 */

/** One scenario, resolved: the graph given on the command lines and the traffic. */
export interface Scenario {
  readonly name: string;
  readonly kind: 'mesh' | 'line' | 'random' | 'idle';
  readonly nodes: number;
  /** `peers[i]`: indices of the nodes given to node i on its command line. */
  readonly peers: readonly (readonly number[])[];
  readonly sender: number;
  /** False for `idle`: connected, then measured without traffic. */
  readonly traffic: boolean;
  /** Messages per second written to the sender; 0 = as fast as its stdin pipe takes them. */
  readonly rate: number;
  /** Messages per run. */
  readonly messages: number;
  /** Runs of this scenario (medians are reported). */
  readonly rounds: number;
  /** A line for the report. */
  readonly description: string;
}

/** What the command line decides about every scenario. */
export interface ScenarioDefaults {
  /** Messages of a burst run (default 2,000). */
  readonly messages: number;
  /**
   * Messages and rate of a random run with 30 nodes or more (default 40 at 2/s). Paced, and slowly,
   * because 100 processes on 2 cores cannot absorb more: every message costs each node one wake-up
   * per copy it receives (about 0.25 s of CPU per message over the network today). Rate 0: a burst.
   */
  readonly messagesLarge: number;
  readonly rateLarge: number;
  /** Messages and rate of a paced run (default 200 at 20/s: a lively chat room). */
  readonly pacedMessages: number;
  readonly rate: number;
  /** Rounds of the small scenarios and of the 100-node one. */
  readonly rounds: number;
  readonly roundsLarge: number;
  readonly seed: number;
}

/** The full benchmark, in the order it runs. */
export const DEFAULT_SCENARIOS = ['mesh3', 'line10', 'random20', 'paced20', 'random100', 'idle10'] as const;
/** `--quick`: the same, with 40 nodes instead of 100 (starting 100 nodes alone takes minutes). */
export const QUICK_SCENARIOS = ['mesh3', 'line10', 'random20', 'paced20', 'random40', 'idle10'] as const;

/** Nodes from which a random graph is built with a degree bound and run with the "large" settings. */
const LARGE = 30;
/** Bound on the given degree of large random graphs: every node gets 2 earlier peers, none more than 6 in all. */
const MAX_GIVEN_DEGREE = 6;

/** mulberry32: the shared harness's generator, so that seed 1 gives the same graphs. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Node i is given 2 distinct random earlier nodes. With `maxDegree`, only earlier nodes whose given
 * degree (both directions) is below it are candidates, so no node is everybody's entry point.
 */
function randomGraph(n: number, seed: number, maxDegree?: number): { peers: number[][]; sender: number } {
  const rng = mulberry32(seed);
  const peers: number[][] = [[]];
  const degree = new Array<number>(n).fill(0);
  for (let i = 1; i < n; i++) {
    const pool = Array.from({ length: i }, (_, j) => j).filter(
      (j) => maxDegree === undefined || degree[j]! < maxDegree,
    );
    const pick: number[] = [];
    const want = Math.min(2, pool.length);
    for (let k = 0; k < want; k++) {
      pick.push(pool.splice(Math.floor(rng() * pool.length), 1)[0]!);
    }
    if (pick.length === 0) pick.push(i - 1); // everything full: keep the graph connected anyway
    for (const j of pick) {
      degree[j]!++;
      degree[i]!++;
    }
    peers.push(pick.sort((x, y) => x - y));
  }
  return { peers, sender: Math.floor(rng() * n) };
}

/**
 * Resolves a scenario name: `meshN`, `lineN`, `randomN`, `pacedN` (randomN at the paced rate) or
 * `idleN`, N in 2..200 (`mesh3`, `line10`, `random20`, `paced20`, `random100`, `idle10` by default).
 * @throws {RangeError} for an unknown name or a node count out of range.
 */
export function scenario(name: string, d: ScenarioDefaults): Scenario {
  const m = /^(mesh|line|random|paced|idle)(\d+)$/.exec(name);
  if (m === null) throw new RangeError(`unknown scenario "${name}" (meshN, lineN, randomN, pacedN, idleN)`);
  const form = m[1] as 'mesh' | 'line' | 'random' | 'paced' | 'idle';
  const n = Number(m[2]);
  if (!Number.isInteger(n) || n < 2 || n > 200) throw new RangeError(`scenario ${name}: 2..200 nodes`);
  const large = n >= LARGE;
  const rounds = large ? d.roundsLarge : d.rounds;
  const burst = large ? d.messagesLarge : d.messages;
  switch (form) {
    case 'mesh':
      return {
        name,
        kind: 'mesh',
        nodes: n,
        peers: Array.from({ length: n }, (_, i) =>
          Array.from({ length: n }, (_, j) => j).filter((j) => j !== i),
        ),
        sender: 0,
        traffic: true,
        rate: 0,
        messages: burst,
        rounds,
        description: `${n} nodes, each given all the others (the seed's example), sender 0, burst`,
      };
    case 'line':
      return {
        name,
        kind: 'line',
        nodes: n,
        peers: Array.from({ length: n }, (_, i) => (i === 0 ? [] : [i - 1])),
        sender: 0,
        traffic: true,
        rate: 0,
        messages: burst,
        rounds,
        description: `chain of ${n}, node i given node i-1, sender at one end, burst`,
      };
    case 'random':
    case 'paced':
    case 'idle': {
      const g = randomGraph(n, d.seed, large ? MAX_GIVEN_DEGREE : undefined);
      const rate = form === 'paced' ? d.rate : large ? d.rateLarge : 0;
      return {
        name,
        kind: form === 'idle' ? 'idle' : 'random',
        nodes: n,
        peers: g.peers,
        sender: g.sender,
        traffic: form !== 'idle',
        rate,
        messages: form === 'paced' ? d.pacedMessages : burst,
        rounds,
        description:
          `${n} nodes, each given 2 random earlier nodes (seed ${d.seed}` +
          `${large ? `, given degree <= ${MAX_GIVEN_DEGREE}` : ''}), ` +
          (form === 'idle'
            ? 'no traffic'
            : `sender ${g.sender}, ${rate > 0 ? `paced at ${rate} msg/s` : 'burst'}`),
      };
    }
  }
}

/** Links given on the command lines (each pair once). */
export function givenLinks(s: Scenario): number {
  const pairs = new Set<string>();
  s.peers.forEach((ps, i) => ps.forEach((j) => pairs.add(i < j ? `${i}-${j}` : `${j}-${i}`)));
  return pairs.size;
}
