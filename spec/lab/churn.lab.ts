/**
 * Scenario 6 of issue 3: churn. Ten hosts, one node each, node i started as
 * `bin/p2p 8001 c(i+1):8001 c(i+2):8001` (a ring of bootstrap addresses; the rest is peer exchange).
 * For a minute, every 2-4 s a random node is killed with kill -9 and restarted 1-4 s later with the
 * same command line (on its host, so with its own data directory: the same node id). Two witnesses,
 * c0 and c5, are never killed: their memory and file descriptors are compared before and after.
 *
 * At the end every node is up and connected (one component, everyone has peers, peer tables agree),
 * there is exactly one TCP connection per linked pair (ss), a message from each node reaches all the
 * others once, and the witnesses' memory and descriptors are back near their starting levels.
 * The random choices come from a seeded generator; the seed is printed (LAB_SEED=n repeats a run).
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import {
  byId,
  chatRound,
  connectedGraph,
  describeAll,
  figure,
  labTest,
  mib,
  NODE,
  pairKey,
  secs,
  sleep,
  waitUntil,
  type Host,
  type Lab,
  type LabNode,
} from './lab.js';

const N = 10;
const WITNESSES = [0, 5];
const CHURN_MS = 60_000;
/** Time to settle after the last restart: the backoff cap (30 s) plus slack. */
const SETTLE_BOUND_MS = NODE.backoffMaxMs + 10_000;
/** "Near the starting level": the witnesses' memory may grow by this much (V8 heap, caches, history). */
const RSS_SLACK = 32 * 1024 * 1024;
/** Descriptors beyond one per peer that may differ (a dial in flight, a closing socket). */
const FD_SLACK = 4;

/** mulberry32: a small seeded generator, so a failing run can be repeated. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function argsFor(hosts: readonly Host[], i: number): string[] {
  return ['8001', `${hosts[(i + 1) % N]!.address}:8001`, `${hosts[(i + 2) % N]!.address}:8001`, '--json'];
}

/** Peer tables agree: A lists B exactly when B lists A. Returns the linked pairs, or undefined. */
function symmetricPairs(nodes: readonly LabNode[]): number | undefined {
  const ids = byId(nodes);
  let pairs = 0;
  for (const node of nodes) {
    for (const peer of node.peers.keys()) {
      const other = ids.get(peer);
      if (other === undefined || !other.peers.has(node.id!)) return undefined;
      pairs++;
    }
  }
  return pairs / 2;
}

async function settle(lab: Lab, nodes: readonly LabNode[], boundMs: number): Promise<number> {
  const start = Date.now();
  let last = '';
  await waitUntil(
    async () => {
      if (!nodes.every((n) => n.alive) || !connectedGraph(nodes)) {
        last = 'not every node is up and in one component';
        return undefined;
      }
      const pairs = symmetricPairs(nodes);
      if (pairs === undefined) {
        last = 'peer tables disagree';
        return undefined;
      }
      const { count, duplicates, pairs: tcp } = await lab.pairCounts(nodes);
      // Linked pairs (by their peer events) with no TCP connection: named, to tell which link is stale.
      const labelled = byId(nodes);
      const unconnected = new Set<string>();
      for (const node of nodes) {
        for (const peer of node.peers.keys()) {
          const key = pairKey(node.label, labelled.get(peer)?.label ?? peer);
          if (!tcp.has(key)) unconnected.add(key);
        }
      }
      last =
        `${pairs} linked pairs, ${count} TCP connections, duplicates: ${duplicates.join(', ') || 'none'}, ` +
        `linked without a connection: ${[...unconnected].join(', ') || 'none'}`;
      return duplicates.length === 0 && count === pairs ? true : undefined;
    },
    boundMs,
    'every node up and connected, one TCP connection per linked pair',
    () => `${last}\n${describeAll(nodes)}`,
    250,
  );
  return Date.now() - start;
}

describe('lab: churn', () => {
  labTest(
    'scenario 6: ten nodes, kill -9 and restart every few seconds for a minute; then all connected, one connection per pair, resources back',
    { timeoutMs: 180_000 },
    async (t, lab) => {
      const seed = Number(process.env['LAB_SEED'] ?? Date.now() % 1_000_000);
      const random = seeded(seed);
      const hosts: Host[] = [];
      for (let i = 0; i < N; i++) hosts.push(await lab.addHost(`c${i}`));
      const current: LabNode[] = await Promise.all(
        hosts.map((host, i) => lab.start(host, argsFor(hosts, i), { label: `c${i}` })),
      );
      const formed = await settle(lab, current, 30_000);
      figure(t, `seed ${seed}; ${N} nodes formed one network in ${secs(formed)}`);
      await chatRound(t, current, 'before churn', 1, 10_000);
      await sleep(2_000);
      const witnesses = WITNESSES.map((i) => current[i]!);
      const before = witnesses.map((w) => ({ rss: w.rss()!, fds: w.fds()!, peers: w.peers.size }));

      // ---- a minute of churn ----
      const churnStart = Date.now();
      const restarts: Promise<void>[] = [];
      const down = new Set<number>();
      let kills = 0;
      const restartTimes: number[] = [];
      const witnessTexts: string[] = [];
      let round = 0;
      const chatter = setInterval(() => {
        round++;
        for (const w of witnesses) {
          const text = `churn ${w.label} ${round}`;
          w.send(text);
          witnessTexts.push(text);
        }
      }, 1_000);
      t.after(() => clearInterval(chatter));
      for (let iteration = 0; iteration < 40 && Date.now() - churnStart < CHURN_MS; iteration++) {
        await sleep(2_000 + random() * 2_000);
        const candidates = current.map((_, i) => i).filter((i) => !WITNESSES.includes(i) && !down.has(i));
        if (candidates.length === 0) continue;
        const i = candidates[Math.floor(random() * candidates.length)]!;
        const victim = current[i]!;
        victim.kill('SIGKILL');
        down.add(i);
        kills++;
        const delay = 1_000 + random() * 3_000;
        restarts.push(
          (async () => {
            await victim.exited;
            await sleep(delay);
            const restartedAt = Date.now();
            const node = await lab.start(hosts[i]!, argsFor(hosts, i), { label: `c${i}` });
            assert.equal(node.id, victim.id, `c${i} keeps its node id across restarts (its data directory)`);
            current[i] = node;
            down.delete(i);
            await waitUntil(
              () => (node.peers.size > 0 ? true : undefined),
              SETTLE_BOUND_MS,
              `c${i} to find a peer`,
            );
            restartTimes.push(Date.now() - restartedAt);
          })(),
        );
      }
      clearInterval(chatter);
      await Promise.all(restarts);
      const churnEnd = Date.now();
      figure(
        t,
        `${kills} kill -9 and restarts in ${secs(churnEnd - churnStart)}; a restarted node found its first peer in ` +
          `${secs(Math.min(...restartTimes))}..${secs(Math.max(...restartTimes))} after its start`,
      );

      // ---- the end state ----
      const settled = await settle(lab, current, SETTLE_BOUND_MS);
      const { count } = await lab.pairCounts(current);
      const degrees = current.map((n) => n.peers.size);
      figure(
        t,
        `settled ${secs(settled)} after the last restart (bound ${secs(SETTLE_BOUND_MS)}): one component, ${count} links, ` +
          `exactly one TCP connection per linked pair (ss), degrees ${Math.min(...degrees)}..${Math.max(...degrees)}`,
      );
      await chatRound(t, current, 'after churn', 1, 10_000);

      const [w0, w1] = witnesses;
      const lost = witnessTexts.filter(
        (text) => (text.includes(`${w0!.label} `) ? w1! : w0!).received(text) === 0,
      );
      const twice = witnessTexts.filter((text) => w0!.received(text) > 1 || w1!.received(text) > 1);
      figure(
        t,
        `witness to witness during the churn: ${witnessTexts.length} lines, ${lost.length} missing, ${twice.length} shown twice`,
      );
      assert.equal(twice.length, 0, 'no line shown twice');

      await sleep(2_000);
      for (const [k, w] of witnesses.entries()) {
        const start = before[k]!;
        const rss = w.rss()!;
        const fds = w.fds()!;
        const peers = w.peers.size;
        figure(
          t,
          `witness ${w.label}: memory ${mib(start.rss)} → ${mib(rss)} (bound +${mib(RSS_SLACK)}), ` +
            `file descriptors ${start.fds} → ${fds} with peers ${start.peers} → ${peers} (bound: one per peer + ${FD_SLACK})`,
        );
        assert.ok(rss <= start.rss + RSS_SLACK, `${w.label}: memory ${mib(start.rss)} → ${mib(rss)}`);
        assert.ok(
          fds <= start.fds + Math.max(0, peers - start.peers) + FD_SLACK,
          `${w.label}: fds ${start.fds} → ${fds}`,
        );
      }
    },
  );
});
