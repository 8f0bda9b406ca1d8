/**
 * One run of one scenario: start the nodes, wait until connected, send the messages through the
 * sender's stdin, read every node's `--json` stdout, and measure from the outside (`/proc`).
 *
 * Procedure (the shared harness's, plus the link and wire figures):
 * 1. Fresh free ports; node i started with `<port> [127.0.0.1:port ...] --json --host 127.0.0.1
 *    --nick bench`, in order, each awaited until it prints `ready` (start-up time: spawn to ready).
 * 2. Connected: a probe line `p|k|t|` every 250 ms until every other node printed one (connect time).
 * 3. Settled: wait until no `peer-up`/`peer-down` for a second (peer exchange adds links after the
 *    probe got through), at most 15 s. The graph is then read from the `peer-up`/`peer-down` events.
 * 4. Messages `m|seq|t|xxx` padded to the size, t = this process's monotonic clock at the write,
 *    written to the sender's stdin as fast as the pipe takes them (or paced); latency = arrival of
 *    the event at this process minus t.
 * 5. End: every receiver has every seq, or no new delivery for the stall timeout, or the cap.
 * 6. `/proc` before and after the message phase: CPU, peak RSS, bytes and write calls.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removePerfTraces, reportPerf, startPerf, type PerfRecording } from './perf.js';
import {
  machineBusyS,
  NodeProc,
  nowNs,
  sleep,
  socketBytesSent,
  stopAll,
  type JsonEvent,
  type PortRange,
  type Sample,
} from './procs.js';
import type { Scenario } from './scenarios.js';

/** Settings of a run that do not depend on the scenario. */
export interface RunSettings {
  /** Program and leading arguments that start a node (`bin/p2p`). */
  readonly command: readonly string[];
  readonly cwd: string;
  /** Arguments added to every node's command line (after the benchmark's own). */
  readonly nodeArgs: readonly string[];
  readonly ports: PortRange;
  /** Bytes of each message text (padded). */
  readonly size: number;
  readonly readyTimeoutMs: number;
  readonly probeTimeoutMs: number;
  /** Quiet time (no peer event) that counts as settled, and the longest wait for it. */
  readonly settleMs: number;
  readonly settleMaxMs: number;
  /** End a run when nothing new arrived for this long after the last write. */
  readonly stallMs: number;
  /** Hard cap on the message phase. */
  readonly capMs: number;
  /** Idle scenario: time measured without traffic. */
  readonly idleMs: number;
  /** Directory for every node's stderr, if any. */
  readonly logs: string | undefined;
  /**
   * Directories for what every node records of itself (`--calls`: V8's call counts; `--allocations`:
   * its heap samples), each node in a subdirectory named like its log (`mesh3-r1-n0`).
   */
  readonly traces?: {
    readonly calls?: string | undefined;
    readonly allocations?: string | undefined;
    /** `perf record` of the machine over the message phase ({@link startPerf}). */
    readonly perf?: string | undefined;
  };
  readonly verbose: boolean;
}

/** Everything measured in one run. Times in ms, sizes in MB, CPU in s unless named otherwise. */
export interface RunResult {
  scenario: string;
  round: number;
  nodes: number;
  messages: number;
  rate: number;
  ok: boolean;
  error?: string;
  notes: string[];
  // start-up and topology
  startMsMean?: number;
  startMsMax?: number;
  allReadyMs?: number;
  connectMs?: number;
  settledMs?: number;
  links?: number;
  degreeMean?: number;
  degreeMax?: number;
  degreeMin?: number;
  /** Links seen by one side only (should be 0). */
  asymmetric?: number;
  hops?: number | null;
  // messages
  delivery?: number;
  deliveryMean?: number;
  deliveryPerNode?: number[];
  dups?: number;
  selfEcho?: number;
  throughput?: number | null;
  goodput?: number | null;
  sendMs?: number;
  ingestMs?: number | null;
  p50?: number | null;
  p95?: number | null;
  p99?: number | null;
  max?: number | null;
  endReason?: string;
  dropsInPhase?: number;
  // resources
  hwmMaxMB?: number;
  hwmMeanMB?: number;
  rssMeanMB?: number;
  rssMaxMB?: number;
  cpuAllS?: number;
  cpuPhaseS?: number;
  cpuPhasePerNodeMeanS?: number;
  cpuPhasePerNodeMaxS?: number;
  cpuSenderS?: number;
  /** CPU of all nodes per message sent, ms. */
  cpuPerMsgMs?: number;
  benchCpuS?: number;
  /**
   * CPU used meanwhile by processes that are not part of this run (other programs on the machine), in
   * cores: a run with more than ~0.2 shared its 2 cores with something else.
   */
  otherCores?: number;
  /** The same during start-up and connecting. */
  otherCoresStart?: number;
  // wire
  /** Bytes of one chat frame on the wire, measured at the sender (its socket bytes / messages / links). */
  frameBytes?: number;
  /** Bytes all nodes sent on their TCP sockets during the message phase. */
  wireBytes?: number;
  /** Wire sends per message: wireBytes / (messages x frameBytes). */
  sendsPerMsg?: number;
  /** What a flood sends: every node to each of its links but the one the message came in on. */
  sendsEstimate?: number;
  /** write()-family system calls of all nodes per message: sockets, stdout, stderr and files. */
  writesPerMsg?: number;
  /** The same less one call per stdout/stderr line read here: sockets and files. */
  socketWritesPerMsg?: number;
  stderrLines?: number;
  wallS?: number;
  /** The message (or idle) phase on the monotonic clock, µs: the window to read a CPU profile in. */
  phaseUs?: [number, number];
}

const r3 = (x: number): number => Math.round(x * 1000) / 1000;
const mb = (kb: number): number => r3(kb / 1024);
const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

/** The p-th percentile (nearest rank) of sorted values. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const k = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[k]!;
}

export const NICK = 'bench';

class RunError extends Error {}

/** Runs one scenario once and returns what was measured; never throws for a failing node. */
export async function runOnce(s: Scenario, round: number, o: RunSettings): Promise<RunResult> {
  const M = s.traffic ? s.messages : 0;
  const N = s.nodes;
  const res: RunResult = {
    scenario: s.name,
    round,
    nodes: N,
    messages: M,
    rate: s.rate,
    ok: false,
    notes: [],
  };
  const log = (line: string): void => {
    if (o.verbose) process.stderr.write(`  ${s.name} r${round}: ${line}\n`);
  };
  const nodes: NodeProc[] = [];
  const ids: (string | undefined)[] = new Array<string | undefined>(N).fill(undefined);
  const peerSets = Array.from({ length: N }, () => new Set<string>());
  const count = Array.from({ length: N }, () => new Uint16Array(M));
  const lat = Array.from({ length: N }, () => new Float64Array(M).fill(NaN));
  const distinct = new Array<number>(N).fill(0);
  let distinctTotal = 0;
  let dups = 0;
  let selfEcho = 0;
  let lastProgress = 0;
  let lastArrival = 0;
  let lastPeerEvent = 0;
  let inPhase = false;
  let dropsInPhase = 0;
  const dropReasons = new Map<string, number>();
  let sentEvents = 0;
  let lastSentAt = 0;
  const probed = new Set<number>();

  const onEvent = (node: NodeProc, e: JsonEvent, at: number): void => {
    const i = node.index;
    switch (e.event) {
      case 'ready':
        ids[i] = e.id;
        return;
      case 'peer-up':
      case 'peer-down':
        if (e.peer === undefined) return;
        if (e.event === 'peer-up') peerSets[i]!.add(e.peer);
        else {
          peerSets[i]!.delete(e.peer);
          if (inPhase) {
            dropsInPhase++;
            const why = (e.reason ?? '?').replace(/\d+/g, 'N');
            dropReasons.set(why, (dropReasons.get(why) ?? 0) + 1);
          }
        }
        lastPeerEvent = at;
        return;
      case 'sent':
        sentEvents++;
        lastSentAt = at;
        return;
      case 'message': {
        const text = e.text ?? '';
        if (text.startsWith('p|')) {
          probed.add(i);
          return;
        }
        if (!text.startsWith('m|')) return;
        const a = text.indexOf('|', 2);
        const b = text.indexOf('|', a + 1);
        const seq = Number(text.slice(2, a));
        const t = Number(text.slice(a + 1, b));
        if (!(seq >= 0 && seq < M)) return;
        if (i === s.sender) {
          selfEcho++;
          return;
        }
        if (count[i]![seq]!++ === 0) {
          lat[i]![seq] = at - t;
          distinct[i]!++;
          distinctTotal++;
          lastProgress = at;
          if (at > lastArrival) lastArrival = at;
        } else dups++;
        return;
      }
    }
  };

  const tStart = nowNs();
  const busyStart = machineBusyS();
  const benchStart = process.cpuUsage();
  // Each run gets its own state directory (history, node ids): nothing lands in ~ and no run sees
  // another's data. Removed at the end.
  const state = mkdtempSync(join(tmpdir(), 'p2p-bench-state-'));
  let perf: PerfRecording | undefined;
  try {
    // 1. start, in order
    const ports = await o.ports.take(N);
    if (o.logs !== undefined) mkdirSync(o.logs, { recursive: true });
    for (let i = 0; i < N; i++) {
      const args = [
        String(ports[i]),
        ...s.peers[i]!.map((j) => `127.0.0.1:${ports[j]}`),
        '--json',
        '--host',
        '127.0.0.1',
        '--nick',
        NICK,
        ...o.nodeArgs,
      ];
      const node = new NodeProc(i, ports[i]!, {
        command: o.command,
        args,
        cwd: o.cwd,
        onEvent,
        env: { ...traceEnv(o.traces, `${s.name}-r${round}-n${i}`), XDG_STATE_HOME: state },
        ...(o.logs !== undefined ? { logFile: join(o.logs, `${s.name}-r${round}-n${i}.log`) } : {}),
      });
      nodes.push(node);
      const deadline = nowNs() + o.readyTimeoutMs * 1e6;
      while (node.readyAtNs === undefined) {
        if (!node.alive) throw new RunError(`start-up: ${node.describe()}`);
        if (nowNs() > deadline)
          throw new RunError(`start-up: no ready within ${o.readyTimeoutMs} ms: ${node.describe()}`);
        await sleep(5);
      }
    }
    const tReady = nowNs();
    const startMs = nodes.map((nd) => (nd.readyAtNs! - nd.startedAtNs) / 1e6);
    res.startMsMean = r3(sum(startMs) / N);
    res.startMsMax = r3(Math.max(...startMs));
    res.allReadyMs = r3((tReady - tStart) / 1e6);
    log(`${N} nodes ready in ${res.allReadyMs} ms`);

    // 2. connected: a probe reached everyone
    const sender = nodes[s.sender]!;
    for (let k = 0; probed.size < N - 1; k++) {
      const dead = nodes.find((nd) => !nd.alive);
      if (dead !== undefined) throw new RunError(`while connecting: ${dead.describe()}`);
      if (nowNs() - tReady > o.probeTimeoutMs * 1e6) {
        const missing = nodes
          .filter((nd) => nd.index !== s.sender && !probed.has(nd.index))
          .map((nd) => nd.index);
        throw new RunError(
          `not connected after ${o.probeTimeoutMs} ms: no probe reached nodes ${missing.join(',')}`,
        );
      }
      sender.write(`p|${k}|${nowNs()}|\n`);
      const until = nowNs() + 250e6;
      while (probed.size < N - 1 && nowNs() < until) await sleep(5);
    }
    res.connectMs = r3((nowNs() - tReady) / 1e6);
    log(`connected after ${res.connectMs} ms`);

    // 3. settled: no peer event for settleMs
    const settleStart = nowNs();
    while (
      nowNs() - Math.max(lastPeerEvent, settleStart) < o.settleMs * 1e6 &&
      nowNs() - settleStart < o.settleMaxMs * 1e6
    ) {
      await sleep(50);
    }
    res.settledMs = r3((Math.max(lastPeerEvent, tReady) - tReady) / 1e6);
    Object.assign(res, graph(ids, peerSets, s.sender));
    log(`settled: links ${res.links}, degree ${res.degreeMean} (max ${res.degreeMax}), hops ${res.hops}`);

    // 4. messages (or idle)
    const pids = new Set(nodes.map((nd) => nd.pid));
    if (o.traces?.perf !== undefined) perf = await startPerf(o.traces.perf, `${s.name}-r${round}`);
    const wire0 = socketBytesSent(pids);
    const s0 = nodes.map((nd) => nd.sample());
    const busy0 = machineBusyS();
    const benchUpTo0 = process.cpuUsage(benchStart);
    res.otherCoresStart = r3(
      Math.max(
        0,
        busy0 - busyStart - sum(s0.map((x) => x.cpuS)) - (benchUpTo0.user + benchUpTo0.system) / 1e6,
      ) /
        ((nowNs() - tStart) / 1e9),
    );
    const out0 = nodes.map((nd) => ({ l: nd.stdoutLines + nd.stderrLines }));
    const bench0 = process.cpuUsage();
    const t0 = nowNs();
    const phaseStartUs = Number(process.hrtime.bigint() / 1000n);
    inPhase = true;

    if (!s.traffic) {
      await sleep(o.idleMs);
      await perf?.stop();
      const s1 = nodes.map((nd) => nd.sample());
      res.otherCores = other(busy0, s0, s1, process.cpuUsage(bench0), t0);
      const dead = nodes.find((nd) => !nd.alive);
      if (dead !== undefined) throw new RunError(`while idle: ${dead.describe()}`);
      Object.assign(res, resources(s0, s1, s.sender, 0));
      res.ok = true;
      return res;
    }

    let sendError: string | undefined;
    const sending = (async () => {
      for (let seq = 0; seq < M; seq++) {
        if (s.rate > 0) {
          const wait = (t0 + (seq * 1e9) / s.rate - nowNs()) / 1e6;
          if (wait >= 1) await sleep(wait);
        }
        let text = `m|${seq}|${nowNs()}|`;
        if (text.length < o.size) text = text.padEnd(o.size, 'x');
        if (!sender.write(`${text}\n`)) {
          await sender.drained();
          if (!sender.alive) {
            sendError = `the sender exited after ${seq + 1} messages`;
            return;
          }
        }
      }
      res.sendMs = r3((nowNs() - t0) / 1e6);
    })();

    const expected = M * (N - 1);
    let endReason = 'complete';
    for (;;) {
      await sleep(10);
      const t = nowNs();
      if (distinctTotal >= expected) break;
      if (sendError !== undefined) {
        endReason = sendError;
        break;
      }
      const dead = nodes.find((nd) => !nd.alive);
      if (dead !== undefined) {
        endReason = `a node exited: ${dead.describe()}`;
        break;
      }
      if (res.sendMs !== undefined && t - Math.max(lastProgress, t0) > o.stallMs * 1e6) {
        endReason = `stalled: nothing new for ${o.stallMs} ms`;
        break;
      }
      if (t - t0 > o.capMs * 1e6) {
        endReason = `cap of ${o.capMs} ms reached`;
        break;
      }
    }
    inPhase = false;
    await perf?.stop();
    res.phaseUs = [phaseStartUs, Number(process.hrtime.bigint() / 1000n)];
    // Let the sender's 'sent' events and the last stdout bytes in, briefly.
    const until = nowNs() + 200e6;
    while (sentEvents < M && nowNs() < until) await sleep(10);
    const s1 = nodes.map((nd) => nd.sample());
    const wire1 = socketBytesSent(pids);
    const bench1 = process.cpuUsage(bench0);
    res.otherCores = other(busy0, s0, s1, bench1, t0);
    await Promise.race([sending, sleep(100)]);

    // 5. figures
    res.endReason = endReason;
    const receivers = nodes.filter((nd) => nd.index !== s.sender).map((nd) => nd.index);
    const ratios = receivers.map((i) => distinct[i]! / M);
    res.delivery = r3(Math.min(...ratios));
    res.deliveryMean = r3(sum(ratios) / ratios.length);
    res.deliveryPerNode = ratios.map(r3);
    res.dups = dups;
    res.selfEcho = selfEcho;
    res.dropsInPhase = dropsInPhase;
    const complete = distinctTotal >= expected;
    const e2e = lastArrival > t0 ? lastArrival - t0 : 0;
    res.throughput = complete && e2e > 0 ? r3(M / (e2e / 1e9)) : null;
    res.goodput = e2e > 0 ? r3(distinctTotal / (N - 1) / (e2e / 1e9)) : null;
    res.ingestMs = sentEvents >= M ? r3((lastSentAt - t0) / 1e6) : null;
    const all: number[] = [];
    for (const i of receivers) for (const v of lat[i]!) if (!Number.isNaN(v)) all.push(v / 1e6);
    all.sort((a, b) => a - b);
    res.p50 = nullable(percentile(all, 50));
    res.p95 = nullable(percentile(all, 95));
    res.p99 = nullable(percentile(all, 99));
    res.max = nullable(all.at(-1) ?? null);
    Object.assign(res, resources(s0, s1, s.sender, M));
    res.benchCpuS = r3((bench1.user + bench1.system) / 1e6);

    // wire: bytes sent on every socket during the phase; one frame's size from the sender, which
    // sends each of its messages once on each of its links and relays nothing else meanwhile.
    const sent = nodes.map((nd) => {
      let bytes = 0;
      for (const [key, after] of wire1.get(nd.pid) ?? []) bytes += after - (wire0.get(nd.pid)?.get(key) ?? 0);
      return bytes;
    });
    const degrees = peerSets.map((p) => p.size);
    const senderLinks = degrees[s.sender]!;
    // A socket closed during the phase takes its counters with it: no wire figures then.
    if (wire1.size > 0 && senderLinks > 0 && dropsInPhase === 0) {
      res.frameBytes = Math.round(sent[s.sender]! / (M * senderLinks));
      res.wireBytes = sum(sent);
      res.sendsPerMsg = r3(res.wireBytes / (M * (sent[s.sender]! / (M * senderLinks))));
    }
    const outLines = sum(nodes.map((nd, i) => nd.stdoutLines + nd.stderrLines - out0[i]!.l));
    const syscw = sum(s1.map((x, i) => x.syscw - s0[i]!.syscw));
    res.writesPerMsg = r3(syscw / M);
    res.socketWritesPerMsg = r3(Math.max(0, syscw - outLines) / M);
    res.stderrLines = sum(nodes.map((nd) => nd.stderrLines));
    // A flood sends each message once on every link out of each node but the link it came in on.
    res.sendsEstimate =
      senderLinks + sum(degrees.filter((_, i) => i !== s.sender).map((d) => Math.max(0, d - 1)));

    res.ok = complete && dups === 0;
    if (!complete) {
      res.error = `incomplete: ${endReason}; delivered min ${res.delivery}, mean ${res.deliveryMean}`;
    } else if (dups > 0) res.error = `${dups} duplicate deliveries`;
    if (selfEcho > 0) res.notes.push(`the sender printed ${selfEcho} message events for its own messages`);
    if (dropsInPhase > 0) {
      const reasons = [...dropReasons].sort((x, y) => y[1] - x[1]).map(([why, n]) => `${n}x ${why}`);
      res.notes.push(
        `${dropsInPhase} peer-down events during the message phase (${reasons.slice(0, 4).join('; ')})`,
      );
    }
    const bad = sum(nodes.map((nd) => nd.badLines));
    if (bad > 0) res.notes.push(`${bad} stdout lines were not JSON`);
    return res;
  } catch (err) {
    if (!(err instanceof RunError)) throw err;
    res.error = err.message;
    return res;
  } finally {
    await stopAll(nodes);
    rmSync(state, { recursive: true, force: true });
    // The nodes wrote their symbol maps from their start: removed however the run ended.
    if (o.traces?.perf !== undefined) {
      const pids = nodes.map((nd) => nd.pid);
      if (perf === undefined) removePerfTraces(o.traces.perf, pids);
      else {
        await perf.stop();
        reportPerf(o.traces.perf, `${s.name}-r${round}`, pids);
      }
    }
    res.wallS = r3((nowNs() - tStart) / 1e9);
  }
}

/** Cores used since `t0` by processes other than the nodes and this benchmark. */
function other(
  busy0: number,
  s0: readonly Sample[],
  s1: readonly Sample[],
  bench: NodeJS.CpuUsage,
  t0: number,
): number {
  const ours = sum(s1.map((x, i) => x.cpuS - s0[i]!.cpuS)) + (bench.user + bench.system) / 1e6;
  return r3(Math.max(0, machineBusyS() - busy0 - ours) / ((nowNs() - t0) / 1e9));
}

function nullable(x: number | null): number | null {
  return x === null ? null : r3(x);
}

/** The node graph from the peer-up/peer-down events: links, degrees, hops from the sender. */
function graph(
  ids: readonly (string | undefined)[],
  peerSets: readonly Set<string>[],
  sender: number,
): Partial<RunResult> {
  const index = new Map<string, number>();
  ids.forEach((id, i) => id !== undefined && index.set(id, i));
  const pairs = new Map<string, number>();
  const adj = peerSets.map(() => new Set<number>());
  peerSets.forEach((set, i) => {
    for (const id of set) {
      const j = index.get(id);
      if (j === undefined || j === i) continue;
      const key = i < j ? `${i}-${j}` : `${j}-${i}`;
      pairs.set(key, (pairs.get(key) ?? 0) + 1);
      adj[i]!.add(j);
      adj[j]!.add(i);
    }
  });
  const dist = new Array<number>(peerSets.length).fill(-1);
  dist[sender] = 0;
  const queue = [sender];
  while (queue.length > 0) {
    const u = queue.shift()!;
    for (const v of adj[u]!) {
      if (dist[v]! < 0) {
        dist[v] = dist[u]! + 1;
        queue.push(v);
      }
    }
  }
  const degrees = peerSets.map((p) => p.size);
  return {
    links: pairs.size,
    asymmetric: [...pairs.values()].filter((c) => c !== 2).length,
    degreeMean: r3(sum(degrees) / degrees.length),
    degreeMax: Math.max(...degrees),
    degreeMin: Math.min(...degrees),
    hops: dist.some((d) => d < 0) ? null : Math.max(...dist),
  };
}

function resources(
  s0: readonly Sample[],
  s1: readonly Sample[],
  sender: number,
  M: number,
): Partial<RunResult> {
  const hwm = s1.map((x) => x.hwmKb);
  const rss = s1.map((x) => x.rssKb);
  const phase = s1.map((x, i) => x.cpuS - s0[i]!.cpuS);
  const cpuPhaseS = sum(phase);
  return {
    hwmMaxMB: mb(Math.max(...hwm)),
    hwmMeanMB: mb(sum(hwm) / hwm.length),
    rssMeanMB: mb(sum(rss) / rss.length),
    rssMaxMB: mb(Math.max(...rss)),
    cpuAllS: r3(sum(s1.map((x) => x.cpuS))),
    cpuPhaseS: r3(cpuPhaseS),
    cpuPhasePerNodeMeanS: r3(cpuPhaseS / phase.length),
    cpuPhasePerNodeMaxS: r3(Math.max(...phase)),
    cpuSenderS: r3(phase[sender] ?? 0),
    ...(M > 0 ? { cpuPerMsgMs: r3((cpuPhaseS * 1000) / M) } : {}),
  };
}

/** The environment that makes a node record its calls or allocations into `traces`' directories. */
function traceEnv(traces: RunSettings['traces'], node: string): Record<string, string> {
  const env: Record<string, string> = {};
  if (traces?.calls !== undefined) env['NODE_V8_COVERAGE'] = join(traces.calls, node);
  if (traces?.allocations !== undefined) env['P2P_HEAP_SAMPLING_DIR'] = join(traces.allocations, node);
  return env;
}
