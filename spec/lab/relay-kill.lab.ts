/**
 * Scenario 4 of issue 3: kill -9 of the relay in a line A–R–B, each node on its own host, A and B
 * started with only R as peer (`bin/p2p 8001 R:8001`), so they can learn of each other only through R.
 *
 * (a) As the node is built, A learns B from R's peer list and dials it at once (it is below its target
 *     degree): the A–B link forms within moments, and R's death costs nothing.
 * (b) A and B cannot reach each other while R lives (nftables drops A↔B): everything goes through R.
 *     At the moment R is killed the block is lifted; A and B must find each other directly, through
 *     the address they learned from R, and chat on.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import {
  chatRound,
  describeAll,
  figure,
  labTest,
  NODE,
  secs,
  sleep,
  waitUntil,
  type Host,
  type Lab,
  type LabNode,
} from './lab.js';

/**
 * A and B link directly after R's death within: the connect timeout of a dial that was in flight under
 * the block (5 s) plus the next retry's backoff (≤ 4 s after ~10 s of failures), plus slack.
 */
const DIRECT_BOUND_MS = NODE.connectTimeoutMs + 4_000 + 2_000;

/** A, R and B on three hosts, A and B started with only R; with `blockDirect`, A and B cannot reach each other. */
async function line(
  lab: Lab,
  { blockDirect = false } = {},
): Promise<{ a: LabNode; r: LabNode; b: LabNode; ha: Host; hb: Host; start: number }> {
  const ha = await lab.addHost('a');
  const hr = await lab.addHost('r');
  const hb = await lab.addHost('b');
  if (blockDirect) await lab.block(ha, hb);
  const r = await lab.start(hr, ['8001', '--json'], { label: 'R' });
  const [a, b] = await Promise.all([
    lab.start(ha, ['8001', `${hr.address}:8001`, '--json', '--log-level', 'debug'], { label: 'A' }),
    lab.start(hb, ['8001', `${hr.address}:8001`, '--json', '--log-level', 'debug'], { label: 'B' }),
  ]);
  await waitUntil(
    () => (a.peers.has(r.id!) && b.peers.has(r.id!) ? true : undefined),
    10_000,
    'A and B to link to R',
    () => describeAll([a, r, b]),
  );
  return { a, r, b, ha, hb, start: Math.max(a.readyAt!, b.readyAt!) };
}

const linkedAt = (node: LabNode, peer: LabNode): number | undefined =>
  node.peerChanges.find((c) => c.event === 'peer-up' && c.peer === peer.id)?.at;

describe('lab: kill -9 of a relay', () => {
  labTest(
    'scenario 4a: A and B, started with only R, link directly through what R told them; kill -9 of R changes nothing',
    { timeoutMs: 60_000 },
    async (t, lab) => {
      const { a, r, b, start } = await line(lab);
      await waitUntil(
        () => (a.peers.has(b.id!) && b.peers.has(a.id!) ? true : undefined),
        10_000,
        'A and B to link directly',
        () => describeAll([a, r, b]),
      );
      const direct = Math.max(linkedAt(a, b)!, linkedAt(b, a)!);
      const viaR = Math.max(linkedAt(a, r)!, linkedAt(b, r)!);
      figure(
        t,
        `A–B link formed ${secs(direct - viaR)} after both had linked to R, ${secs(direct - start)} after A and B were ready (bound 10 s)`,
      );
      assert.equal(a.peers.get(b.id!)?.address, b.address, 'A knows B at its lab address');
      await chatRound(t, [a, r, b], 'before the kill', 2, 5_000);

      const killedAt = Date.now();
      r.kill('SIGKILL');
      await waitUntil(
        () => (!a.peers.has(r.id!) && !b.peers.has(r.id!) ? true : undefined),
        5_000,
        'A and B to notice that R is gone',
        () => describeAll([a, b]),
      );
      figure(
        t,
        `R's death seen by A and B in ${secs(Date.now() - killedAt)} (the kernel closes its sockets; bound 5 s)`,
      );
      assert.ok(a.peers.has(b.id!) && b.peers.has(a.id!), 'the A–B link survives');
      await chatRound(t, [a, b], 'after the kill', 3, 5_000);
    },
  );

  labTest(
    'scenario 4b: A and B cannot reach each other while R lives; when R is killed they link directly and chat on',
    { timeoutMs: 60_000 },
    async (t, lab) => {
      const { a, r, b, ha, hb } = await line(lab, { blockDirect: true });
      // Through R only: the chat works, the direct dials fail.
      await chatRound(t, [a, r, b], 'through R', 2, 5_000);
      await sleep(6_000);
      assert.ok(!a.peers.has(b.id!) && !b.peers.has(a.id!), 'no A–B link while blocked');
      const attempts = (n: LabNode, other: LabNode): number =>
        n.stderrLines.filter((l) => l.includes(`cannot reach ${other.address}`)).length;
      figure(
        t,
        `while blocked: A tried B ${attempts(a, b)} times, B tried A ${attempts(b, a)} times (failed dials, from their debug logs)`,
      );

      const killedAt = Date.now();
      r.kill('SIGKILL');
      await lab.unblock(ha, hb);
      await waitUntil(
        () => (a.peers.has(b.id!) && b.peers.has(a.id!) ? true : undefined),
        DIRECT_BOUND_MS,
        'A and B to link directly after R died',
        () => describeAll([a, b]),
      );
      figure(
        t,
        `A–B linked directly ${secs(Date.now() - killedAt)} after R was killed (bound ${secs(DIRECT_BOUND_MS)}: a dial in flight's ${secs(NODE.connectTimeoutMs)} connect timeout + the next backoff + 2 s)`,
      );
      await chatRound(t, [a, b], 'after R died', 3, 5_000);
    },
  );
});
