/**
 * The node's per-remote-host accept rate, across hosts (on loopback it cannot be seen: loopback is
 * exempt). lib/node/node.ts accepts at most 20 new connections at once from one remote address, then 5
 * per second (a token bucket, ACCEPT_RATE); over it a new socket is closed at once and
 * `refusing connections: more than 20 connections in a burst from HOST` is logged, at most once a
 * second.
 *
 * Three hosts: H (`bin/p2p 8001`), Y, an honest node dialling H (`bin/p2p 8001 H:8001`), and X, the
 * attacker: a small Node script run inside X's namespace (through `Lab.exec`, i.e. `ip netns exec`)
 * that opens 200 TCP connections to H:8001 as fast as it can, then one every 100 ms for 2 s (twice the
 * refill rate), and holds every connection H keeps until 4 s after it started. For each connection it
 * records when it connected and when H closed it. The script dials H's lab address only, and bounds
 * itself (it exits after 8 s whatever happens; `Lab.exec` kills it after 10 s).
 *
 * Asserted: H held at most 20 + 5/s × the flood's span (+ slack) of X's connections and closed the
 * rest at once; H's own `ss` agrees; H logged the refusal naming X's address exactly, at most once a
 * second; Y stayed linked to H, and chat lines went both ways during the flood and after it; after a
 * quiet spell (the bucket refills) X's new connections are accepted again.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import {
  describeAll,
  figure,
  labTest,
  percentile,
  secs,
  sleep,
  SUBNET_PREFIX,
  waitForDelivery,
  waitUntil,
  type Host,
  type Lab,
  type LabNode,
} from './lab.js';

/** The node's accept rate per remote host (lib/node/node.ts ACCEPT_RATE), stated here as a bound. */
const ACCEPT = { burst: 20, perSecond: 5 } as const;
/** Connections X opens at once. */
const BURST = 200;
/** Then one connection every PACE_MS, PACED times: 10/s, twice the refill rate. */
const PACED = 20;
const PACE_MS = 100;
/** X holds what H kept until this long after the script started. */
const HOLD_UNTIL_MS = 4_000;
/** The flood script exits by itself after this long (`Lab.exec` kills it after 10 s). */
const SCRIPT_LIMIT_MS = 8_000;
/** A connection H closed within this long of its connecting counts as refused at once. */
const REFUSED_WITHIN_MS = 250;
/** Connections H may hold beyond the bucket's figure: the refill while a burst is accepted, timer jitter. */
const ACCEPT_SLACK = 2;
/** Quiet time after the flood before X tries again: the bucket refills by 5/s × this. */
const REFILL_WAIT_MS = 2_000;
/** Connections X opens after the quiet spell: all must be held (the bucket has about 20 tokens again). */
const AGAIN = 5;
/** Honest chat between H and Y must arrive within this, during the flood and after. */
const CHAT_BOUND_MS = 5_000;

/** One connection of the flood script, times in ms since the script started (null: did not happen). */
interface FloodRecord {
  readonly phase: 'burst' | 'paced';
  readonly start: number;
  readonly connect: number | null;
  readonly end: number | null;
  readonly close: number | null;
  readonly error: string | null;
  /** Still open (connected, not closed by H) when the hold ended. */
  readonly openAtEnd: boolean;
}

interface FloodResult {
  /** Date.now() when the script started: the lab's one clock, for comparing with the nodes' events. */
  readonly t0Wall: number;
  readonly endedAt: number;
  readonly error?: string;
  readonly records: FloodRecord[];
}

/**
 * The attacker: plain `node:net` sockets, no handshake (H, the responder, never speaks first, so a
 * connection H keeps just sits in its handshake). Prints one JSON line: every connection's times.
 */
const FLOOD_SCRIPT = `
import { connect } from 'node:net';
const cfg = __CONFIG__;
const t0Wall = Date.now();
const t0 = performance.now();
const now = () => Math.round((performance.now() - t0) * 10) / 10;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const records = [];
const sockets = [];
const guard = setTimeout(() => {
  process.stdout.write(JSON.stringify({ t0Wall, endedAt: now(), error: 'flood script timed out', records }) + '\\n');
  process.exit(2);
}, cfg.limitMs);
function open(phase) {
  const r = { phase, start: now(), connect: null, end: null, close: null, error: null, openAtEnd: false };
  records.push(r);
  const s = connect({ host: cfg.host, port: cfg.port });
  sockets.push([r, s]);
  s.on('data', () => {});
  s.on('error', (e) => { r.error ??= e.code ?? e.message; });
  s.once('end', () => { r.end ??= now(); });
  return new Promise((resolve) => {
    s.once('connect', () => { r.connect = now(); resolve(); });
    s.once('close', () => { r.close = now(); resolve(); });
  });
}
const burst = [];
for (let i = 0; i < cfg.burst; i++) burst.push(open('burst'));
await Promise.all(burst);
const pacedFrom = now();
for (let i = 1; i <= cfg.paced; i++) {
  await sleep(Math.max(0, pacedFrom + i * cfg.paceMs - now()));
  await open('paced');
}
await sleep(Math.max(0, cfg.holdUntilMs - now()));
for (const [r, s] of sockets) r.openAtEnd = r.connect !== null && r.end === null && r.close === null && !s.destroyed;
for (const [, s] of sockets) s.destroy();
clearTimeout(guard);
process.stdout.write(JSON.stringify({ t0Wall, endedAt: now(), records }) + '\\n');
process.exit(0);
`;

/** Runs the flood script inside `from`'s namespace against `target` (a lab address only). */
async function flood(
  lab: Lab,
  from: Host,
  target: Host,
  port: number,
  shape: { burst: number; paced: number; holdUntilMs: number },
): Promise<FloodResult> {
  assert.ok(target.address.startsWith(SUBNET_PREFIX), `${target.address} is a lab address`);
  const config = { host: target.address, port, paceMs: PACE_MS, limitMs: SCRIPT_LIMIT_MS, ...shape };
  const out = await lab.exec(from, process.execPath, ['--input-type=module', '-'], {
    input: FLOOD_SCRIPT.replace('__CONFIG__', JSON.stringify(config)),
  });
  const result = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as FloodResult;
  assert.equal(result.error, undefined, `flood script: ${result.error}`);
  return result;
}

/** The flood's connections sorted by what H did with them. */
function classify(records: readonly FloodRecord[]): {
  held: FloodRecord[];
  refused: FloodRecord[];
  failed: FloodRecord[];
  other: FloodRecord[];
  refusedAfter: number[];
} {
  const held: FloodRecord[] = [];
  const refused: FloodRecord[] = [];
  const failed: FloodRecord[] = [];
  const other: FloodRecord[] = [];
  const refusedAfter: number[] = [];
  for (const r of records) {
    if (r.connect === null) {
      failed.push(r);
      continue;
    }
    if (r.openAtEnd) {
      held.push(r);
      continue;
    }
    const closedAt = Math.min(r.end ?? Infinity, r.close ?? Infinity);
    if (closedAt - r.connect <= REFUSED_WITHIN_MS) {
      refused.push(r);
      refusedAfter.push(closedAt - r.connect);
    } else other.push(r);
  }
  return { held, refused, failed, other, refusedAfter };
}

/** Sends `text` from `from`; resolves with the ms until `to` showed it. */
async function chatLatency(from: LabNode, to: LabNode, text: string): Promise<number> {
  const start = Date.now();
  from.send(text);
  await waitForDelivery([to], [text], CHAT_BOUND_MS, `${to.label} to show ${JSON.stringify(text)}`);
  const shown = to.messages.find((m) => m.text === text);
  return (shown?.at ?? Date.now()) - start;
}

/** Established TCP connections on `host`'s port `port` from `peer`, as `ss` in `host`'s namespace shows them. */
async function establishedFrom(lab: Lab, host: Host, port: number, peer: Host): Promise<number> {
  const text = await lab.exec(host, 'ss', [
    '-Htn',
    'state',
    'established',
    'sport',
    '=',
    `:${port}`,
    'dst',
    peer.address,
  ]);
  return text.split('\n').filter((line) => line.trim().length > 0).length;
}

describe('lab: accept rate per remote host', () => {
  labTest(
    'a connection flood from one host is cut to 20 + 5/s, logged once a second, and does not touch an honest peer',
    { timeoutMs: 60_000 },
    async (t, lab) => {
      const hh = await lab.addHost('h');
      const hx = await lab.addHost('x');
      const hy = await lab.addHost('y');
      const port = 8001;
      const h = await lab.start(hh, [String(port), '--json'], { label: 'H' });
      const y = await lab.start(hy, ['8001', `${hh.address}:${port}`, '--json'], { label: 'Y' });
      const all = [h, y];
      await waitUntil(
        () => (h.peers.has(y.id!) && y.peers.has(h.id!) ? true : undefined),
        15_000,
        'Y linked to H',
        () => describeAll(all),
      );
      const linkedAt = Date.now();
      const before = [
        await chatLatency(y, h, 'before the flood: Y to H'),
        await chatLatency(h, y, 'before the flood: H to Y'),
      ];

      // ---- the flood: 200 at once, then 10/s for 2 s, held until 4 s ----
      const expected = `refusing connections: more than ${ACCEPT.burst} connections in a burst from ${hx.address}`;
      const refusalLines = (): string[] =>
        h.stderrLines.map((l) => l.replace(/^\S+ /, '')).filter((l) => l.includes('refusing connections'));
      const running = flood(lab, hx, hh, port, { burst: BURST, paced: PACED, holdUntilMs: HOLD_UNTIL_MS });
      running.catch(() => {}); // awaited below; this only keeps a failure from counting as unhandled meanwhile
      let finished = false;
      void running.finally(() => (finished = true)).catch(() => {});
      await waitUntil(
        () => (refusalLines().length > 0 || finished ? true : undefined),
        8_000,
        'H to refuse some of X’s connections',
        () => describeAll(all),
        20,
      );
      // Honest chat while X's connections are held.
      const during = [
        await chatLatency(y, h, 'during the flood: Y to H'),
        await chatLatency(h, y, 'during the flood: H to Y'),
      ];
      const chatDoneAt = Date.now();
      // What H itself holds from X, from its own namespace, once the burst is over (sampled until the end).
      await sleep(500);
      let ssMax = 0;
      while (!finished) {
        ssMax = Math.max(ssMax, await establishedFrom(lab, hh, port, hx));
        await sleep(200);
      }
      const result = await running;

      const { held, refused, failed, other, refusedAfter } = classify(result.records);
      const attempts = result.records.length;
      const burst = result.records.filter((r) => r.phase === 'burst');
      const paced = result.records.filter((r) => r.phase === 'paced');
      const burstSpan = Math.max(...burst.map((r) => r.connect ?? r.close ?? r.start)) - burst[0]!.start;
      const span = Math.max(...result.records.map((r) => r.start)) - result.records[0]!.start;
      const bound = ACCEPT.burst + Math.floor((ACCEPT.perSecond * span) / 1000) + ACCEPT_SLACK;
      const burstHeld = held.filter((r) => r.phase === 'burst').length;
      const pacedHeld = held.filter((r) => r.phase === 'paced').length;
      const pacedSpan = Math.max(...paced.map((r) => r.start)) - burst[0]!.start;
      figure(
        t,
        `X opened ${attempts} connections to H (${burst.length} at once in ${burstSpan.toFixed(0)} ms, then ${paced.length} at ${1000 / PACE_MS}/s), ` +
          `span ${secs(span)}: H held ${held.length} (${burstHeld} of the burst, ${pacedHeld} of the paced), ` +
          `refused ${refused.length} at once, ${failed.length} failed to connect, ${other.length} closed later; ` +
          `bound ${ACCEPT.burst} + ${ACCEPT.perSecond}/s × ${secs(span)} + ${ACCEPT_SLACK} = ${bound}`,
      );
      figure(
        t,
        `refused connections were closed by H ${percentile(refusedAfter, 50).toFixed(1)} ms (p50) / ` +
          `${percentile(refusedAfter, 99).toFixed(1)} ms (p99) / ${Math.max(...refusedAfter).toFixed(1)} ms (max) after connecting ` +
          `(counted as refused within ${REFUSED_WITHIN_MS} ms); H's ss showed at most ${ssMax} established from X`,
      );
      assert.equal(
        failed.length,
        0,
        `every connection of X got through the TCP handshake: ${JSON.stringify(failed[0])}`,
      );
      assert.equal(other.length, 0, `H either refused at once or held: ${JSON.stringify(other[0])}`);
      assert.equal(held.length + refused.length, attempts);
      assert.ok(held.length <= bound, `H held ${held.length} of X's connections, bound ${bound}`);
      assert.ok(
        burstHeld >= ACCEPT.burst &&
          burstHeld <= ACCEPT.burst + Math.ceil((ACCEPT.perSecond * burstSpan) / 1000) + 1,
        `H held ${burstHeld} of X's burst of ${BURST} (in ${burstSpan.toFixed(0)} ms): the bucket's ${ACCEPT.burst}`,
      );
      // The paced phase runs at twice the refill rate: about 5/s get through, the rest are refused.
      const refill = Math.floor((ACCEPT.perSecond * (pacedSpan - burstSpan)) / 1000);
      assert.ok(
        pacedHeld >= refill - 3 && pacedHeld <= refill + ACCEPT_SLACK,
        `H held ${pacedHeld} of ${paced.length} paced connections; the refill over ${secs(pacedSpan - burstSpan)} is ${refill}`,
      );
      assert.ok(ssMax <= bound, `H's ss showed ${ssMax} connections from X, bound ${bound}`);

      // ---- the log: X's address exactly, at most once a second ----
      const lines = refusalLines();
      // H logs at most one line a second: over the refusals' span S, at most ⌊S⌋ + 1 lines (plus 100 ms
      // for the difference between X's clock of a refusal and H's).
      const refusedAt = refused.map((r) => r.connect!);
      const refusedSpan = Math.max(...refusedAt) - Math.min(...refusedAt);
      const maxLines = Math.floor((refusedSpan + 100) / 1000) + 1;
      figure(
        t,
        `H logged ${lines.length} refusal lines for ${refused.length} refusals over ${secs(refusedSpan)} ` +
          `(at most one a second: ≤ ${maxLines}): ${JSON.stringify(lines[0])}`,
      );
      assert.ok(lines.length >= 1, 'H logged the refusal');
      for (const line of lines)
        assert.equal(line, `warn: ${expected}`, 'the refusal names X’s address exactly');
      assert.ok(lines.length <= maxLines, `${lines.length} refusal lines in ${secs(refusedSpan)}`);

      // ---- the honest peer: linked throughout, chat both ways during the flood ----
      const floodEnd = result.t0Wall + result.endedAt;
      figure(
        t,
        `honest chat latency H↔Y: before the flood ${before.join(' / ')} ms, during it ${during.join(' / ')} ms ` +
          `(Y→H / H→Y; delivered ${secs(floodEnd - chatDoneAt)} before X let go; bound ${secs(CHAT_BOUND_MS)})`,
      );
      assert.ok(chatDoneAt < floodEnd, 'the chat went through while X held its connections');
      const drops = [h, y].flatMap((n) =>
        n.peerChanges.filter((c) => c.event === 'peer-down' && c.at >= linkedAt),
      );
      assert.deepEqual(drops, [], 'Y and H stay linked through the flood');

      // ---- after a quiet spell X may connect again ----
      await sleep(REFILL_WAIT_MS);
      const again = await flood(lab, hx, hh, port, { burst: AGAIN, paced: 0, holdUntilMs: 1_000 });
      const afterwards = classify(again.records);
      const after = [
        await chatLatency(y, h, 'after the flood: Y to H'),
        await chatLatency(h, y, 'after the flood: H to Y'),
      ];
      figure(
        t,
        `${secs(REFILL_WAIT_MS)} after the flood X opened ${AGAIN} connections: H held ${afterwards.held.length} for 1 s, ` +
          `refused ${afterwards.refused.length}; honest chat after it ${after.join(' / ')} ms`,
      );
      assert.equal(afterwards.held.length, AGAIN, 'the bucket refilled: X is accepted again');
      assert.ok(h.peers.has(y.id!) && y.peers.has(h.id!), 'Y is still linked to H');
      assert.deepEqual(
        [h, y].flatMap((n) => n.peerChanges.filter((c) => c.event === 'peer-down' && c.at >= linkedAt)),
        [],
        'no drop between H and Y at any time',
      );
    },
  );
});
