/**
 * Scenario 5 of issue 3: hosts behind NAT. Two public hosts P1, P2 (`bin/p2p 8001 <other>:8001`) and
 * two hosts each behind its own masquerading router: N1 (`bin/p2p 8001 P1:8001`, default options) and
 * N2 (`bin/p2p 8001 P2:8001 --max-peers 1`: it keeps one link, so the others reach it only through P2).
 * Nobody can dial in to N1 or N2: a dial to a router's public address is refused.
 *
 * Every node must send and receive every message, once, through the links the NAT'd hosts make; and
 * the nodes that learn a NAT'd host's unreachable address must stop dialling it: backoff with a cap,
 * then forgotten. The routers count every SYN that arrives for port 8001, per source host (nftables
 * counters), which is what "stop dialling" means on the wire.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import {
  chatRound,
  describeAll,
  figure,
  labTest,
  NODE,
  publicAddress,
  secs,
  sleep,
  waitUntil,
  type Host,
  type LabNode,
} from './lab.js';

/**
 * A learned address is dialled at most `learnedDialAttempts` (8) times; the backoff ceilings before
 * them add up to 0.25+0.5+1+2+4+8+16+30 s ≈ 62 s, so dialling stops within ~62 s (plus slack).
 */
const FORGET_BOUND_MS = 70_000;
/** Longest gap between two dials: the backoff cap (30 s) plus slack. */
const MAX_GAP_MS = NODE.backoffMaxMs + 2_000;

interface SynTrace {
  readonly router: Host;
  readonly source: Host;
  readonly node: LabNode;
  /** When each counted SYN was seen (polled every 250 ms). */
  readonly times: number[];
  count: number;
}

describe('lab: NAT', () => {
  labTest(
    'scenario 5: hosts behind NAT send and receive every message; their unreachable addresses are dialled with backoff, then forgotten',
    { timeoutMs: 120_000 },
    async (t, lab) => {
      const hp1 = await lab.addHost('p1');
      const hp2 = await lab.addHost('p2');
      const hn1 = await lab.addNatHost('n1');
      const hn2 = await lab.addNatHost('n2');
      const r1 = hn1.router!;
      const r2 = hn2.router!;
      await lab.watchSyns(r1, 8001, [hp1, hp2, hn2]);
      await lab.watchSyns(r2, 8001, [hp1, hp2, hn1]);

      const debug = ['--json', '--log-level', 'debug'];
      const [p1, p2] = await Promise.all([
        lab.start(hp1, ['8001', `${hp2.address}:8001`, ...debug], { label: 'P1' }),
        lab.start(hp2, ['8001', `${hp1.address}:8001`, ...debug], { label: 'P2' }),
      ]);
      const [n1, n2] = await Promise.all([
        lab.start(hn1, ['8001', `${hp1.address}:8001`, ...debug], { label: 'N1' }),
        lab.start(hn2, ['8001', `${hp2.address}:8001`, '--max-peers', '1', ...debug], { label: 'N2' }),
      ]);
      const all = [p1, p2, n1, n2];
      const joined = Date.now();

      // Watch the routers' SYN counters from now on.
      const traces: SynTrace[] = [
        { router: r1, source: hp1, node: p1, times: [], count: 0 },
        { router: r1, source: hp2, node: p2, times: [], count: 0 },
        { router: r1, source: hn2, node: n2, times: [], count: 0 },
        { router: r2, source: hp1, node: p1, times: [], count: 0 },
        { router: r2, source: hp2, node: p2, times: [], count: 0 },
        { router: r2, source: hn1, node: n1, times: [], count: 0 },
      ];
      let polling = true;
      const poll = (async () => {
        const deadline = Date.now() + FORGET_BOUND_MS + 30_000;
        while (polling && Date.now() < deadline) {
          for (const router of [r1, r2]) {
            const counts = await lab.synCounts(router);
            for (const trace of traces.filter((x) => x.router === router)) {
              const n = counts.get(trace.source.name) ?? 0;
              while (trace.count < n) {
                trace.count++;
                trace.times.push(Date.now());
              }
            }
          }
          await sleep(250);
        }
      })();
      t.after(async () => {
        polling = false;
        await poll;
      });

      await waitUntil(
        () =>
          p1.peers.has(p2.id!) &&
          p1.peers.has(n1.id!) &&
          p2.peers.has(n1.id!) &&
          p2.peers.has(n2.id!) &&
          n2.peers.size === 1
            ? true
            : undefined,
        15_000,
        'P1–P2, N1 to both, N2 to P2 only',
        () => describeAll(all),
      );
      figure(
        t,
        `links: N1 dialled out to P1 and to P2 (learned from P1); N2 keeps its one link to P2; P1 and P2 know N1 at ${p1.peers.get(n1.id!)?.address} (its router's address)`,
      );
      assert.equal(p1.peers.get(n1.id!)?.address, `${r1.address}:8001`);
      assert.equal(n2.peers.has(p1.id!), false, 'N2 has no link to P1 (nobody can dial in)');

      await chatRound(t, all, 'through NAT', 3, 5_000);
      for (const node of all)
        for (const line of node.stderrLines)
          assert.doesNotMatch(
            line,
            /10\.77\.[12]\.\d/,
            `${node.label} never sees a private address behind NAT: ${line}`,
          );
      figure(t, 'no node ever saw (or dialled) a private address behind NAT (debug logs)');

      // N1 leaves: P1 and P2 now hold its unreachable address too.
      const leftAt = Date.now();
      n1.kill('SIGKILL');
      const from = (trace: SynTrace): number => (trace.router === r1 ? leftAt : joined);
      const done = (trace: SynTrace): boolean => {
        const addr = `${publicAddress(trace.router === r1 ? hn1 : hn2)}:8001`;
        const last = trace.times.at(-1) ?? from(trace);
        const forgot = trace.node.stderrLines.some((l) => l.includes(`forgetting ${addr}`));
        if (trace.node === n1) return true; // gone
        // Forgotten (the node says so, and no SYN since), or quiet for longer than the backoff cap.
        return (forgot && Date.now() - last > 1_000) || Date.now() - last > MAX_GAP_MS;
      };
      await waitUntil(
        () => (traces.every(done) ? true : undefined),
        FORGET_BOUND_MS,
        'every node to stop dialling the NAT routers',
        () =>
          traces.map((x) => `${x.source.name} → ${x.router.name}: ${x.count} SYNs`).join('\n') +
          '\n' +
          describeAll(all),
        500,
      );
      await sleep(2_000);
      polling = false;
      await poll;

      for (const trace of traces) {
        if (trace.node === n1 && trace.router === r2) {
          figure(
            t,
            `N1 → N2's router: ${trace.count} SYNs while N1 lived (N1 learned N2's unreachable address from P2)`,
          );
          continue;
        }
        const start = from(trace);
        // For N1's router, only the dials after N1 left count: when a node's link goes down its
        // addresses start a fresh round of attempts. A dial before it (P2 learning N1's address from
        // P1 a moment before N1 dials P2 itself) is reported, not counted.
        const times = trace.times.filter((time) => time >= start);
        const before = trace.times.length - times.length;
        const gaps = times.map((time, i) => time - (i === 0 ? start : times[i - 1]!));
        const stopped = times.length === 0 ? 0 : times.at(-1)! - start;
        figure(
          t,
          `${trace.source.name} → ${trace.router.name}:8001 ${trace.router === r1 ? 'after N1 left' : 'while N2 lives'}: ` +
            `${times.length} dials (bound ${NODE.learnedDialAttempts}), gaps ${gaps.map((g) => secs(g)).join(', ') || '-'}, ` +
            `last ${secs(stopped)} after ${trace.router === r1 ? 'N1 left' : 'N2 joined'} (bound ${secs(FORGET_BOUND_MS)})` +
            (before > 0 ? `; ${before} before N1 left, while the links formed` : ''),
        );
        assert.ok(
          times.length <= NODE.learnedDialAttempts,
          `${trace.source.name} dialled ${trace.router.name} ${times.length} times`,
        );
        for (const gap of gaps) assert.ok(gap <= MAX_GAP_MS, `a gap of ${secs(gap)} exceeds the backoff cap`);
        assert.ok(stopped <= FORGET_BOUND_MS, 'dialling stopped within the bound');
      }
      // Both public nodes tried N1 after it left, and gave up on it.
      for (const trace of traces.filter((x) => x.router === r1 && x.node !== n2))
        assert.ok(
          trace.times.some((time) => time >= leftAt),
          `${trace.node.label} tried to reach N1 again after it left`,
        );

      // The network goes on: N2, reachable only through P2, still chats with P1.
      await chatRound(t, [p1, p2, n2], 'after N1 left', 2, 5_000);
    },
  );

  labTest(
    'scenario 5b: a host behind NAT with a port forward and --advertise can be dialled at its public address',
    { timeoutMs: 60_000 },
    async (t, lab) => {
      const hp1 = await lab.addHost('p1');
      const hp2 = await lab.addHost('p2');
      const hn = await lab.addNatHost('n');
      const router = hn.router!;
      await lab.forwardPort(hn, 8001);
      const published = `${router.address}:8001`;
      // N dials nobody: it is reached only through the forward, at the address it advertises.
      const n = await lab.start(hn, ['8001', '--advertise', published, '--json'], { label: 'N' });
      const p2 = await lab.start(hp2, ['8001', '--json'], { label: 'P2' });
      const p1 = await lab.start(hp1, ['8001', `${hp2.address}:8001`, published, '--json'], { label: 'P1' });
      const all = [p1, p2, n];
      await waitUntil(
        () => (all.every((x) => x.peers.size === 2) ? true : undefined),
        15_000,
        'a full mesh of P1, P2 and N',
        () => describeAll(all),
      );
      const seenByP2 = p2.peers.get(n.id!)!;
      figure(
        t,
        `P1 dialled N at ${published} (its router, forwarded); P2 learned N from P1 at ${seenByP2.address} and linked (${seenByP2.direction === 'out' ? 'P2 dialled in' : 'N dialled P2'})`,
      );
      assert.equal(p1.peers.get(n.id!)?.direction, 'out', 'P1 dialled N through the port forward');
      assert.equal(p1.peers.get(n.id!)?.address, published, 'P1 knows N at its advertised address');
      assert.equal(seenByP2.address, published, 'P2 knows N at its advertised address');
      await chatRound(t, all, 'forwarded', 2, 5_000);
    },
  );
});
