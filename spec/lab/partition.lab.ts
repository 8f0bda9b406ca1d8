/**
 * Scenario 3 of issue 3: partition and heal. The seed's example 3 (two hosts, three nodes each);
 * host 1's cable is pulled while every node keeps chatting, then plugged back in.
 *
 * Two cuts. A 10 s cut is shorter than the node's silence timeout (15 s), so by design it is not
 * detected: the links stay up and TCP retransmits what was queued once the cable is back. A long
 * cut is held until ping/pong has detected it on every link, then 10 s more; after the heal the links
 * must come back and messages flow everywhere again. Messages sent across the cut that never arrived
 * are counted and reported (recovering them is the history resync's job, not asserted here);
 * duplicates are never allowed.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import {
  assertAtMostOnce,
  Chatter,
  chatRound,
  describeAll,
  figure,
  fullMesh,
  labTest,
  NODE,
  secs,
  sleep,
  startTwoByThree,
  waitUntil,
  type LabNode,
  type Sent,
} from './lab.js';

/** Detection: the silence timeout, plus up to one ping interval until the check runs, plus CPU slack. */
const DETECT_BOUND_MS = NODE.peerTimeoutMs + NODE.pingIntervalMs + 2_000;
/**
 * Reconnection after the heal: a dial in flight may wait out its connect timeout (5 s), then the next
 * retry's backoff; a cut of ~30 s leaves the backoff at a few seconds. 15 s covers both with slack.
 */
const RECONNECT_BOUND_MS = 15_000;

/** Deliveries of `sent` lines that nodes of `to` have not shown (one per line and receiver). */
function missing(sent: readonly Sent[], to: readonly LabNode[]): number {
  let n = 0;
  for (const s of sent) for (const node of to) if (node !== s.from && node.received(s.text) === 0) n++;
  return n;
}

describe('lab: partition and heal', () => {
  labTest(
    'scenario 3: a host cut out of a 2×3 network is detected by ping/pong, and after the heal the links and the chat come back',
    { timeoutMs: 150_000 },
    async (t, lab) => {
      const h1 = await lab.addHost('h1');
      const h2 = await lab.addHost('h2');
      const nodes = await startTwoByThree(lab, h1, h2);
      const side1 = nodes.slice(0, 3);
      const side2 = nodes.slice(3);
      await fullMesh(nodes, 20_000);
      // Every node chats twice a second all along.
      const chatter = new Chatter(() => nodes, 'p3', 500, 120_000);
      t.after(() => chatter.stop());
      await sleep(1_000);

      // ---- a cut held until detected, then 10 s more ----
      const cutAt = Date.now();
      await lab.cut(h1);
      const crossDown = (n: LabNode): number => {
        const others = n.host === h1 ? side2 : side1;
        return others.filter((o) => !n.peers.has(o.id!)).length;
      };
      await waitUntil(
        () => (nodes.every((n) => crossDown(n) === 3) ? true : undefined),
        DETECT_BOUND_MS,
        'every node to drop its three peers on the other host',
        () => describeAll(nodes),
      );
      const detected = Date.now() - cutAt;
      const downTimes = nodes.flatMap((n) =>
        n.peerChanges.filter((c) => c.event === 'peer-down' && c.at >= cutAt).map((c) => c.at - cutAt),
      );
      const reasons = new Set(
        nodes.flatMap((n) =>
          n.peerChanges
            .filter((c) => c.event === 'peer-down' && c.at >= cutAt)
            .map((c) => (c.reason ?? '').replace(/ \d+ ms/, ' N ms')),
        ),
      );
      figure(
        t,
        `cut detected by ping/pong: first link dropped ${secs(Math.min(...downTimes))}, all 18 link ends ${secs(detected)} after the cut ` +
          `(bound ${secs(DETECT_BOUND_MS)} = ${secs(NODE.peerTimeoutMs)} silence + ${secs(NODE.pingIntervalMs)} ping interval + 2 s); reasons: ${[...reasons].join('; ')}`,
      );
      // Each side went on chatting within itself.
      const sameSide = chatter.between(cutAt, Date.now() - 1_000);
      for (const s of sameSide) {
        const mates = (s.from.host === h1 ? side1 : side2).filter((n) => n !== s.from);
        for (const mate of mates)
          assert.equal(
            mate.received(s.text),
            1,
            `${mate.label} got ${s.text} from its own side during the cut`,
          );
      }
      figure(t, `during the cut, ${sameSide.length} lines reached every node of their own side, once`);

      await sleep(10_000);
      const healAt = Date.now();
      await lab.heal(h1);
      const reconnected = await fullMesh(nodes, RECONNECT_BOUND_MS);
      const upTimes = nodes.flatMap((n) =>
        n.peerChanges.filter((c) => c.event === 'peer-up' && c.at >= healAt).map((c) => c.at - healAt),
      );
      figure(
        t,
        `after the heal: first link back ${secs(Math.min(...upTimes))}, full mesh ${secs(reconnected)} after the heal (bound ${secs(RECONNECT_BOUND_MS)})`,
      );

      const cutLines = chatter.between(cutAt, healAt);
      const crossDeliveries = cutLines.length * 3;
      const missedAtMesh = cutLines.reduce((n, s) => n + missing([s], s.from.host === h1 ? side2 : side1), 0);
      await chatRound(t, nodes, 'after heal', 1, 5_000);
      await sleep(3_000);
      const missedLater = cutLines.reduce((n, s) => n + missing([s], s.from.host === h1 ? side2 : side1), 0);
      figure(
        t,
        `lines sent across the cut: ${cutLines.length} (${crossDeliveries} cross-host deliveries); missed: ${missedAtMesh} when the mesh was back, ` +
          `${missedLater} some 4 s later (the history resync on reconnect is what recovers them)`,
      );
      // ---- a 10 s cut: below the 15 s silence timeout ----
      const shortCut = Date.now();
      await lab.cut(h1);
      await sleep(10_000);
      await lab.heal(h1);
      const shortHeal = Date.now();
      const duringShort = chatter.between(shortCut, shortHeal);
      const settleStart = Date.now();
      try {
        await waitUntil(
          () => (missing(duringShort, nodes) === 0 ? true : undefined),
          12_000,
          'the lines sent during the 10 s cut to reach everyone once the cable is back',
        );
      } catch {
        // Reported below; a 10 s cut is allowed to lose what a later issue will resync.
      }
      const shortMissed = missing(duringShort, nodes);
      const downsShort = nodes.flatMap((n) =>
        n.peerChanges.filter((c) => c.event === 'peer-down' && c.at >= shortCut && c.at < shortHeal),
      );
      figure(
        t,
        `10 s cut: ${downsShort.length} peer-downs during it (expected 0: below the ${secs(NODE.peerTimeoutMs)} silence timeout), ` +
          `${duringShort.length} lines sent during it (${duringShort.length * 3} cross-host deliveries), ${shortMissed} deliveries missing ` +
          `${secs(Date.now() - settleStart)} after the heal (TCP retransmits the queue when the cable is back)`,
      );
      // TCP's retransmission backoff can keep a link quiet a little past the heal; watch a while.
      await sleep(8_000);
      const downsAfter = nodes.flatMap((n) =>
        n.peerChanges.filter((c) => c.event === 'peer-down' && c.at >= shortHeal),
      );
      figure(t, `in the 8 s after the 10 s cut healed: ${downsAfter.length} peer-downs`);
      await fullMesh(nodes, RECONNECT_BOUND_MS);
      chatter.stop();
      await chatRound(t, nodes, 'after the short cut', 1, 5_000);

      assertAtMostOnce(nodes, chatter.sent);
      figure(t, `${chatter.sent.length} lines chatted in all, none shown twice anywhere`);
    },
  );
});
