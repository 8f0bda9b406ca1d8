/**
 * Scenario 7 of issue 3: a slow reader. Four hosts in a star: a sender S
 * (`bin/p2p 8001 L:8001 O1:8001 O2:8001`) and three leaves, the slow reader L and two others O1, O2
 * (`bin/p2p 8001 S:8001 --max-peers 1`: each keeps its one link to S, so S alone feeds them and every
 * line costs one delivery per leaf, not a flood through a mesh). S is fed 16 kB lines at a steady
 * rate (1.6 MB/s). After a baseline, L is frozen with SIGSTOP: its sockets stay open and its kernel
 * buffers fill, then S's socket buffer, then S's outbox for L.
 *
 * S must not hold more than its outbox bound (8 MiB) for L. Its memory grows anyway, with the history
 * it keeps of every message; O1 keeps the same history and has no link to L, so it is the control:
 * while L is frozen, S's memory may grow by no more than O1's plus the outbox bound (plus slack for
 * garbage-collection timing). L is disconnected within a stated time, by the outbox bound or by the
 * ping timeout (15 s of silence), whichever comes first (the figure says which); O1 and O2 keep
 * receiving everything, at the rate it is sent, no slower than before.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import {
  describeAll,
  figure,
  labTest,
  mib,
  NODE,
  percentile,
  secs,
  sleep,
  waitUntil,
  type LabNode,
} from './lab.js';

/**
 * Lines per second fed to S, and their size: 100 × 16 kB ≈ 1.6 MB/s. The node's cost is per message
 * more than per byte, so few large lines fill an outbox fastest for the CPU they take.
 */
const RATE = 100;
const LINE_BYTES = 16_000;
const BASELINE_MS = 6_000;
/** The feeder stops by itself after this long. */
const FEED_MAX_MS = 60_000;
/** The others' median latency while L is frozen: at most twice what it was before, or this, whichever is more. */
const LATENCY_FLOOR_MS = 1_000;
/** L must be dropped by S within: the ping timeout, plus a ping interval until the check runs, plus slack. */
const DROP_BOUND_MS = NODE.peerTimeoutMs + NODE.pingIntervalMs + 3_000;
/**
 * S's memory growth while L is frozen may exceed the control's by the outbox bound plus this: the two
 * processes' garbage collectors run at different moments (observed spread about ±18 MiB).
 */
const RSS_SLACK = 32 * 1024 * 1024;

/**
 * Feeds `node` RATE lines per second until stopped, in 20 ms ticks that catch up with the clock (a late
 * timer sends more), so the rate holds on a busy machine. Each line carries its number and send time.
 */
class Feeder {
  seq = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly pad = 'x'.repeat(LINE_BYTES);

  constructor(private readonly node: LabNode) {
    const start = Date.now();
    this.timer = setInterval(() => {
      if (Date.now() - start > FEED_MAX_MS) {
        this.stop(); // bounded even if a test forgets to stop it
        return;
      }
      const due = Math.floor(((Date.now() - start) * RATE) / 1000);
      while (this.seq < due) {
        const seq = ++this.seq;
        const now = Date.now();
        this.node.send(`slow ${seq} ${now} ${this.pad}`);
      }
    }, 20);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** The lines a node received with sequence numbers in [from, to): when it showed them, and their latency (ms). */
function arrivals(node: LabNode, from: number, to: number): { at: number; latency: number }[] {
  const out: { at: number; latency: number }[] = [];
  for (const m of node.messages) {
    const match = /^slow (\d+) (\d+) /.exec(m.text);
    if (match === null) continue;
    const seq = Number(match[1]);
    if (seq >= from && seq < to) out.push({ at: m.at, latency: m.at - Number(match[2]) });
  }
  return out;
}

const latencies = (node: LabNode, from: number, to: number): number[] =>
  arrivals(node, from, to).map((a) => a.latency);

describe('lab: slow reader', () => {
  labTest(
    'scenario 7: a peer frozen with SIGSTOP does not grow the sender past its outbox bound, is dropped in time, and the others keep full speed',
    { timeoutMs: 120_000 },
    async (t, lab) => {
      const hs = await lab.addHost('s');
      const hl = await lab.addHost('l');
      const ho1 = await lab.addHost('o1');
      const ho2 = await lab.addHost('o2');
      const leaf = ['8001', `${hs.address}:8001`, '--json', '--max-peers', '1'];
      const [l, o1, o2] = await Promise.all([
        lab.start(hl, leaf, { label: 'L' }),
        lab.start(ho1, leaf, { label: 'O1' }),
        lab.start(ho2, leaf, { label: 'O2' }),
      ]);
      const s = await lab.start(
        hs,
        ['8001', `${hl.address}:8001`, `${ho1.address}:8001`, `${ho2.address}:8001`, '--json'],
        {
          label: 'S',
        },
      );
      const all = [s, l, o1, o2];
      await waitUntil(
        () => (s.peers.size === 3 && [l, o1, o2].every((n) => n.peers.has(s.id!)) ? true : undefined),
        15_000,
        'S linked to L, O1 and O2',
        () => describeAll(all),
      );
      const c = o1; // the control: the same history as S, no link to L

      const feeder = new Feeder(s);
      t.after(() => feeder.stop());
      const rss: { at: number; s: number; c: number }[] = [];
      const sampler = setInterval(() => {
        const [sBytes, cBytes] = [s.rss(), c.rss()];
        if (sBytes !== undefined && cBytes !== undefined) rss.push({ at: Date.now(), s: sBytes, c: cBytes });
      }, 200);
      t.after(() => clearInterval(sampler));

      // ---- baseline: everyone reads ----
      await sleep(BASELINE_MS);
      const stopAt = Date.now();
      const stopSeq = feeder.seq + 1;
      l.kill('SIGSTOP');
      const atStop = rss.at(-1)!;

      // ---- L frozen: S must drop it within the bound ----
      const dropped = (n: LabNode) =>
        n.peerChanges.find((c) => c.event === 'peer-down' && c.peer === l.id && c.at >= stopAt);
      const lag = (): string =>
        `lines fed ${feeder.seq}, shown by O1 ${o1.messages.length}, O2 ${o2.messages.length}; S memory ${mib(s.rss() ?? 0)}`;
      await waitUntil(
        () => (dropped(s) !== undefined ? true : undefined),
        DROP_BOUND_MS,
        'S to drop the frozen L',
        () => `${describeAll([s, o1, o2])}\n${lag()}`,
      );
      const sDrop = dropped(s)!;
      assert.match(
        sDrop.reason ?? '',
        /ERR_OUTBOX_OVERFLOW|ERR_PEER_TIMEOUT/,
        'L is dropped by the outbox bound or by the ping timeout',
      );
      // The others go on at full speed for a while after the drop too.
      await sleep(4_000);
      const endSeq = feeder.seq + 1;
      feeder.stop();
      clearInterval(sampler);
      const stall = rss.filter((x) => x.at > stopAt);
      const sGrowth = Math.max(...stall.map((x) => x.s)) - atStop.s;
      const cGrowth = Math.max(...stall.map((x) => x.c)) - atStop.c;

      figure(
        t,
        `S dropped the frozen L ${secs(sDrop.at - stopAt)} after SIGSTOP (bound ${secs(DROP_BOUND_MS)}), reason: ${sDrop.reason ?? '?'}`,
      );
      figure(
        t,
        `memory while L was frozen: S ${mib(atStop.s)} + ${mib(sGrowth)}, the control O1 (same history, no link to L) ` +
          `${mib(atStop.c)} + ${mib(cGrowth)}; S's extra growth ${mib(sGrowth - cGrowth)} ` +
          `(bound ${mib(NODE.outboxBytes)} outbox + ${mib(RSS_SLACK)} slack)`,
      );
      assert.ok(
        sGrowth <= cGrowth + NODE.outboxBytes + RSS_SLACK,
        `S's memory grew by ${mib(sGrowth)} while L was frozen, the control's by ${mib(cGrowth)}`,
      );

      // ---- the others: everything, once, at the rate it was sent ----
      await waitUntil(
        () => ([o1, o2].every((o) => latencies(o, 1, endSeq).length >= endSeq - 1) ? true : undefined),
        20_000,
        'O1 and O2 to have every line',
        () =>
          [o1, o2].map((o) => `${o.label}: ${latencies(o, 1, endSeq).length} of ${endSeq - 1}`).join(', '),
      );
      for (const o of [o1, o2]) {
        const every = latencies(o, 1, endSeq);
        assert.equal(every.length, endSeq - 1, `${o.label} shows each of the ${endSeq - 1} lines once`);
        // "Before": the second half of the baseline, once the nodes are warm.
        const before = latencies(o, Math.max(1, stopSeq - Math.floor((RATE * BASELINE_MS) / 2000)), stopSeq);
        const during = latencies(o, stopSeq, endSeq);
        // Lines per second O showed while L was frozen, from its first to its last arrival of that time.
        const times = arrivals(o, stopSeq, endSeq).map((a) => a.at);
        const rate = ((times.length - 1) / Math.max(1, Math.max(...times) - Math.min(...times))) * 1000;
        figure(
          t,
          `${o.label}: ${every.length} lines, each once; latency in the 3 s before the stall p50 ${percentile(before, 50)} ms / p99 ${percentile(before, 99)} ms, ` +
            `while L was frozen p50 ${percentile(during, 50)} ms / p99 ${percentile(during, 99)} ms; received ${rate.toFixed(0)} lines/s (fed ${RATE}/s); ` +
            `median bound ${Math.max(LATENCY_FLOOR_MS, 2 * percentile(before, 50)).toFixed(0)} ms`,
        );
        assert.equal(during.length, endSeq - stopSeq, `${o.label} got every line sent while L was frozen`);
        assert.ok(rate >= RATE * 0.9, `${o.label} kept up: ${rate.toFixed(0)} lines/s of ${RATE}`);
        // Not slowed down by the frozen peer: the median no worse than before the stall (a busy machine
        // may be slow throughout, and its tail noisy; what counts is that L's stall does not slow the others).
        const bound = Math.max(LATENCY_FLOOR_MS, 2 * percentile(before, 50));
        assert.ok(
          percentile(during, 50) <= bound,
          `${o.label}: median latency while L was frozen ${percentile(during, 50)} ms, bound ${bound} ms`,
        );
      }
    },
  );
});
