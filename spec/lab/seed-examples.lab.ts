/**
 * Scenarios 1 and 2 of issue 3: the seed's examples 2 and 3 across real (namespaced) hosts, with the
 * seed's command lines adapted to the lab's addresses (plus `--json` to observe them). The nodes
 * listen on all interfaces, as the seed's users run them.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { chatRound, figure, fullMesh, labTest, onePerPair, secs, startTwoByThree } from './lab.js';

const UNSPECIFIED_OR_LOOPBACK = /^(0\.0\.0\.0|127\.|\[::\]|\[::1\]|\[::ffff:127\.|localhost)/;

describe('lab: the seed examples across hosts', () => {
  labTest(
    'scenario 1 (seed example 2): one node on each of two hosts; messages both ways, each received once',
    { timeoutMs: 60_000 },
    async (t, lab) => {
      const h1 = await lab.addHost('h1');
      const h2 = await lab.addHost('h2');
      // `bin/p2p 8001 <other host>:8001` on both, started together: they dial each other at once.
      const [a, b] = await Promise.all([
        lab.start(h1, ['8001', `${h2.address}:8001`, '--json', '--log-level', 'debug']),
        lab.start(h2, ['8001', `${h1.address}:8001`, '--json', '--log-level', 'debug']),
      ]);
      const start = Math.max(a.readyAt!, b.readyAt!);
      await fullMesh([a, b], 10_000);
      figure(t, `linked ${secs(Date.now() - start)} after both were ready (bound 10 s)`);
      assert.equal(a.peers.get(b.id!)?.address, `${h2.address}:8001`, 'h1 knows h2 at its real address');
      assert.equal(b.peers.get(a.id!)?.address, `${h1.address}:8001`, 'h2 knows h1 at its real address');
      await chatRound(t, [a, b], 'example 2', 3, 5_000);
      const settled = await onePerPair(lab, [a, b], 15_000);
      const duplicates = [a, b].flatMap((n) =>
        n.stderrLines.filter((l) => /duplicate connection/.test(l)),
      ).length;
      figure(
        t,
        `one TCP connection between the two nodes (ss), ${secs(settled)} after the chat; ` +
          `${duplicates} duplicate-connection decisions logged (both dial at once)`,
      );
      assert.equal(a.peerChanges.length, 1, 'h1: one peer-up, no flapping');
      assert.equal(b.peerChanges.length, 1, 'h2: one peer-up, no flapping');
    },
  );

  labTest(
    'scenario 2 (seed example 3): three nodes on each of two hosts; every message once at all six; real addresses; one connection per pair',
    { timeoutMs: 90_000 },
    async (t, lab) => {
      const h1 = await lab.addHost('h1');
      const h2 = await lab.addHost('h2');
      const h3 = await lab.addHost('h3'); // only for the probe: "a peer on another host"
      // Host 1 runs `bin/p2p 8001 H2:8001 H2:8002 H2:8003`, `bin/p2p 8002 H2:...`, `bin/p2p 8003 H2:...`;
      // host 2 the same with H1. All six start at once.
      const nodes = await startTwoByThree(lab, h1, h2, ['--json', '--log-level', 'debug']);
      const start = Math.max(...nodes.map((n) => n.readyAt!));
      await fullMesh(nodes, 20_000);
      figure(
        t,
        `full mesh (each node linked to the other 5) ${secs(Date.now() - start)} after all were ready (bound 20 s)`,
      );
      await chatRound(t, nodes, 'example 3', 2, 5_000);

      const settled = await onePerPair(lab, nodes, 15_000);
      const { count } = await lab.pairCounts(nodes);
      figure(
        t,
        `${count} TCP connections for 15 pairs, exactly one per pair (ss), ${secs(settled)} after the chat (bound 15 s)`,
      );

      // Addresses: what each node shows for its peers, what it learned, and what it tells a peer on another host.
      const addressOf = new Map(nodes.map((n) => [n.id!, n.address]));
      for (const node of nodes) {
        for (const peer of node.peers.values())
          assert.equal(
            peer.address,
            addressOf.get(peer.peer),
            `${node.label} knows ${peer.peer} at its real address`,
          );
        const learned = node.stderrLines.filter((l) => / learned \S+ at /.test(l));
        for (const line of learned)
          assert.doesNotMatch(line.replace(/.* at /, ''), UNSPECIFIED_OR_LOOPBACK, `${node.label}: ${line}`);
      }
      const seen = await lab.probe(
        h3,
        nodes.map((n) => n.address),
      );
      let entries = 0;
      for (const [i, result] of seen.entries()) {
        const node = nodes[i]!;
        assert.equal(result.error, undefined, `probe of ${node.label}: ${result.error}`);
        assert.equal(result.hello?.id, node.id, `${node.address} is ${node.label}`);
        if (result.hello?.addr !== undefined) assert.doesNotMatch(result.hello.addr, UNSPECIFIED_OR_LOOPBACK);
        const peers = result.peers ?? [];
        assert.equal(peers.length, 5, `${node.label} tells a peer on another host about its 5 peers`);
        for (const entry of peers) {
          assert.doesNotMatch(entry.addr, UNSPECIFIED_OR_LOOPBACK, `${node.label} advertises ${entry.addr}`);
          assert.equal(
            entry.addr,
            addressOf.get(entry.id),
            `${node.label} advertises ${entry.id} at its real address`,
          );
          entries++;
        }
      }
      figure(
        t,
        `a peer on a third host was told ${entries} peer addresses by the 6 nodes: 0 unspecified or loopback, all real lab addresses`,
      );
    },
  );

  labTest(
    "scenario 2b: the tutorial's three nodes on one host with 127.0.0.1 peers, joined from another host: loopback addresses are never passed across hosts",
    { timeoutMs: 90_000 },
    async (t, lab) => {
      const h1 = await lab.addHost('h1');
      const h2 = await lab.addHost('h2');
      const h3 = await lab.addHost('h3'); // only for the probe
      const ports = ['8001', '8002', '8003'];
      // README's quick start on host 1 (`bin/p2p 8001 127.0.0.1:8002 127.0.0.1:8003`, ...); host 2 joins
      // with `bin/p2p 8001 H1:8001` and must learn the other two at H1's address, not at 127.0.0.1.
      const local = await Promise.all(
        ports.map((port) =>
          lab.start(h1, [
            port,
            ...ports.filter((p) => p !== port).map((p) => `127.0.0.1:${p}`),
            '--json',
            '--log-level',
            'debug',
          ]),
        ),
      );
      const joiner = await lab.start(h2, ['8001', `${h1.address}:8001`, '--json', '--log-level', 'debug'], {
        label: 'h2:8001',
      });
      const nodes = [...local, joiner];
      await fullMesh(nodes, 20_000);
      for (const node of local)
        assert.equal(
          joiner.peers.get(node.id!)?.address,
          node.address,
          `h2 knows ${node.label} at ${node.address}`,
        );
      figure(t, `h2's node linked to all three h1 nodes at ${local.map((n) => n.address).join(', ')}`);
      await chatRound(t, nodes, 'localised', 2, 5_000);
      await onePerPair(lab, nodes, 15_000);
      for (const line of joiner.stderrLines.filter((l) => / learned \S+ at /.test(l)))
        assert.doesNotMatch(line.replace(/.* at /, ''), UNSPECIFIED_OR_LOOPBACK, `h2: ${line}`);
      const seen = await lab.probe(
        h3,
        local.map((n) => n.address),
      );
      let entries = 0;
      for (const [i, result] of seen.entries()) {
        assert.equal(result.error, undefined, `probe of ${local[i]!.label}: ${result.error}`);
        for (const entry of result.peers ?? []) {
          assert.doesNotMatch(
            entry.addr,
            UNSPECIFIED_OR_LOOPBACK,
            `${local[i]!.label} advertises ${entry.addr} across hosts`,
          );
          entries++;
        }
      }
      figure(
        t,
        `a peer on a third host was told ${entries} addresses by the h1 nodes (which know each other as 127.0.0.1): 0 loopback`,
      );
    },
  );
  labTest(
    "scenario 2c: a peer on another host that advertises a loopback address is known at its real address, and never passed on as this host's",
    { timeoutMs: 60_000 },
    async (t, lab) => {
      const h1 = await lab.addHost('h1');
      const h2 = await lab.addHost('h2');
      const h3 = await lab.addHost('h3'); // only for the probe
      const a = await lab.start(h1, ['8001', '--json', '--log-level', 'debug']);
      // Misconfigured: it tells its peers to dial 127.0.0.1, which from h1 leads to h1 itself.
      const b = await lab.start(h2, [
        '8002',
        `${h1.address}:8001`,
        '--advertise',
        '127.0.0.1:8002',
        '--json',
        '--log-level',
        'debug',
      ]);
      await fullMesh([a, b], 10_000);
      assert.equal(a.peers.get(b.id!)?.address, `${h2.address}:8002`, 'h1 knows h2 at its real address');
      const [seen] = await lab.probe(h3, [a.address]);
      assert.equal(seen!.error, undefined, `probe of ${a.label}: ${seen!.error}`);
      const told = (seen!.peers ?? []).filter((entry) => entry.id === b.id);
      assert.deepEqual(
        told.map((entry) => entry.addr),
        [`${h2.address}:8002`],
        "a peer on a third host is told h2 at its real address, not at h1's",
      );
      assert.ok(
        a.stderrLines.some((l) => l.includes('a loopback address: ignored')),
        'h1 says why it ignores the advertised address',
      );
      figure(t, `h2 advertised 127.0.0.1:8002; h1 knows it, and tells h3 it is, at ${h2.address}:8002`);
    },
  );
});
