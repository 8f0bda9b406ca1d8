import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  canonicalHost,
  AddressError,
  formatAddress,
  isLoopback,
  isUnspecified,
  normalizeHost,
  parseAddress,
  parsePort,
  type Address,
} from '../../lib/protocol/address.js';

const NUM_RUNS = 200;

/** Runs `parse` and returns its address, or undefined when it throws an AddressError; anything else fails. */
function addressOrAddressError(parse: () => Address): Address | undefined {
  try {
    return parse();
  } catch (err) {
    if (err instanceof AddressError) return undefined;
    throw err;
  }
}

const hostArb = fc.oneof(
  fc.ipV4(),
  fc.ipV6(),
  fc.domain(),
  fc.constantFrom('localhost', 'a', 'node_1', 'example.com.', '::', '::1', '::ffff:10.0.0.1'),
);
const portArb = fc.integer({ min: 1, max: 65535 });
const addressArb: fc.Arbitrary<Address> = fc
  .tuple(fc.mixedCase(hostArb), portArb)
  .map(([host, port]) => ({ host, port }));

/** Strings built mostly from the characters an address is made of, to reach every branch of the parser. */
const addressLikeArb = fc.string({
  unit: fc.constantFrom(...'[]:.%-_ 0123456789abcdefxyzABCDEF'.split('')),
  maxLength: 24,
});

describe('parseAddress', () => {
  it('reads a host name and a port', () => {
    assert.deepEqual(parseAddress('localhost:8002'), { host: 'localhost', port: 8002 });
    assert.deepEqual(parseAddress('example.com:80'), { host: 'example.com', port: 80 });
    assert.deepEqual(parseAddress('node-1.lan:65535'), { host: 'node-1.lan', port: 65535 });
    assert.deepEqual(parseAddress('my_host:1'), { host: 'my_host', port: 1 });
  });

  it('reads an IPv4 address and a port', () => {
    assert.deepEqual(parseAddress('127.0.0.1:8002'), { host: '127.0.0.1', port: 8002 });
    assert.deepEqual(parseAddress('10.1.2.3:9000'), { host: '10.1.2.3', port: 9000 });
  });

  it('reads an IPv6 address in brackets and drops the brackets', () => {
    assert.deepEqual(parseAddress('[::1]:8002'), { host: '::1', port: 8002 });
    assert.deepEqual(parseAddress('[2001:db8::42]:443'), { host: '2001:db8::42', port: 443 });
    assert.deepEqual(parseAddress('[::]:8002'), { host: '::', port: 8002 });
  });

  it('lower-cases host names and IPv6 addresses', () => {
    assert.deepEqual(parseAddress('LocalHost:8002'), { host: 'localhost', port: 8002 });
    assert.deepEqual(parseAddress('EXAMPLE.Com:80'), { host: 'example.com', port: 80 });
    assert.deepEqual(parseAddress('[2001:DB8::AB]:80'), { host: '2001:db8::ab', port: 80 });
  });

  it('unwraps an IPv4-mapped IPv6 address to plain IPv4', () => {
    assert.deepEqual(parseAddress('[::ffff:1.2.3.4]:8002'), { host: '1.2.3.4', port: 8002 });
    assert.deepEqual(parseAddress('[::FFFF:1.2.3.4]:8002'), { host: '1.2.3.4', port: 8002 });
  });

  describe('throws an AddressError', () => {
    const refuses = (text: string): void => {
      assert.throws(() => parseAddress(text), AddressError, JSON.stringify(text));
    };

    it('for a missing port', () => {
      for (const text of ['localhost', 'localhost:', '127.0.0.1', '[::1]', '[::1]:']) refuses(text);
    });

    it('for port 0, 65536 and beyond', () => {
      for (const text of ['localhost:0', 'localhost:65536', 'localhost:99999', 'localhost:123456'])
        refuses(text);
    });

    it('for a port that is not a decimal number', () => {
      for (const text of [
        'localhost:abc',
        'localhost:-1',
        'localhost:+80',
        'localhost:8e3',
        'localhost: 80',
        'localhost:８０',
      ]) {
        refuses(text);
      }
    });

    it('for a bare IPv6 address without brackets', () => {
      for (const text of ['::1:8002', '2001:db8::1:80', 'fe80::1:8002', '::ffff:1.2.3.4:80']) refuses(text);
    });

    it('for an empty host', () => {
      for (const text of [':8002', '[]:8002']) refuses(text);
    });

    it('for brackets around something that is not IPv6', () => {
      for (const text of ['[127.0.0.1]:80', '[localhost]:80', '[::1:80', '[::1]8002', '[::1]:80]'])
        refuses(text);
    });

    it('for garbage', () => {
      for (const text of [
        '',
        ':',
        '::',
        'a b:80',
        'host/path:80',
        'http://host:80',
        '-host:80',
        'a..b:80',
        '@:1',
        '\n:1',
      ]) {
        refuses(text);
      }
      refuses(`${'a'.repeat(254)}:80`); // a name longer than 253 characters
      refuses(`${'a'.repeat(64)}.com:80`); // a label longer than 63 characters
    });
  });

  it('gives an Address or an AddressError for any string', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), addressLikeArb), (text) => {
        const address = addressOrAddressError(() => parseAddress(text));
        if (address === undefined) return;
        assert.ok(Number.isInteger(address.port) && address.port >= 1 && address.port <= 65535);
        assert.equal(address.host, normalizeHost(address.host), 'the host comes out normalised');
        assert.deepEqual(parseAddress(formatAddress(address)), address, 'what it reads, it can write back');
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('round-trips formatAddress for IPv4, IPv6 and host-name addresses, normalising the host', () => {
    fc.assert(
      fc.property(addressArb, (address) => {
        const normal: Address = { host: normalizeHost(address.host), port: address.port };
        const parsed = parseAddress(formatAddress(address));
        assert.deepEqual(parsed, normal);
        assert.equal(formatAddress(parsed), formatAddress(normal));
        assert.equal(formatAddress(parseAddress(formatAddress(parsed))), formatAddress(parsed));
      }),
      { numRuns: NUM_RUNS },
    );
  });

  // mergePeers drops peer-list entries whose host isLoopback/isUnspecified says is this machine or
  // "any interface". Each input below names such a host; parseAddress must refuse it, or yield a
  // host those checks recognise. Every offending input is listed on failure.
  const misread = (texts: readonly string[], recognised: (host: string) => boolean): string[] =>
    texts.flatMap((text) => {
      const address = addressOrAddressError(() => parseAddress(text));
      return address === undefined || recognised(address.host) ? [] : [`${text} read as ${address.host}`];
    });

  it('refuses or recognises every spelling of the IPv6 loopback and unspecified addresses', () => {
    const loopback = [
      '[0:0:0:0:0:0:0:1]:8002',
      '[::0:1]:8002',
      '[::ffff:7f00:1]:8002',
      '[0:0:0:0:0:ffff:127.0.0.1]:8002',
    ];
    const unspecified = ['[0:0:0:0:0:0:0:0]:8002', '[::0]:8002', '[0::]:8002', '[::ffff:0:0]:8002'];
    assert.deepEqual([...misread(loopback, isLoopback), ...misread(unspecified, isUnspecified)], []);
  });

  it('refuses or recognises numeric host names the resolver reads as 127.0.0.1 or 0.0.0.0', () => {
    // getaddrinfo takes inet_aton forms: 127.1, 2130706433, 0x7f.0.0.1 and 0177.0.0.1 all mean
    // 127.0.0.1, and 0 and 0.0 mean 0.0.0.0. No real host name is all-numeric in its last label.
    const loopback = ['127.1:8002', '2130706433:8002', '0x7f.0.0.1:8002', '0177.0.0.1:8002'];
    const unspecified = ['0:8002', '0.0:8002'];
    assert.deepEqual([...misread(loopback, isLoopback), ...misread(unspecified, isUnspecified)], []);
  });
});

describe('formatAddress', () => {
  it('writes host:port, with IPv6 in brackets', () => {
    assert.equal(formatAddress({ host: 'localhost', port: 8002 }), 'localhost:8002');
    assert.equal(formatAddress({ host: '127.0.0.1', port: 8002 }), '127.0.0.1:8002');
    assert.equal(formatAddress({ host: '::1', port: 8002 }), '[::1]:8002');
    assert.equal(formatAddress({ host: '2001:db8::42', port: 443 }), '[2001:db8::42]:443');
  });
});

describe('parsePort', () => {
  it('reads a decimal port in 1..65535', () => {
    assert.equal(parsePort('1'), 1);
    assert.equal(parsePort('8002'), 8002);
    assert.equal(parsePort('65535'), 65535);
  });

  it('refuses 0 unless allowZero', () => {
    assert.throws(() => parsePort('0'), AddressError);
    assert.equal(parsePort('0', true), 0);
  });

  it('refuses a port above 65535 or not in decimal digits', () => {
    for (const text of ['65536', '100000', '', ' 1', '1 ', '-1', '0x10', '1.0', 'abc', '٣']) {
      assert.throws(() => parsePort(text), AddressError, JSON.stringify(text));
      assert.throws(() => parsePort(text, true), AddressError, JSON.stringify(text));
    }
  });

  it('reads every port in range back from its decimal form', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 65535 }), (port) => {
        assert.equal(parsePort(String(port), true), port);
      }),
      { numRuns: NUM_RUNS },
    );
  });
});

describe('normalizeHost', () => {
  it('lower-cases and unwraps IPv4-mapped IPv6 addresses', () => {
    assert.equal(normalizeHost('Example.COM'), 'example.com');
    assert.equal(normalizeHost('::ffff:10.0.0.1'), '10.0.0.1');
    assert.equal(normalizeHost('::FFFF:10.0.0.1'), '10.0.0.1');
    assert.equal(normalizeHost('FE80::1'), 'fe80::1');
  });

  it('leaves an IPv6 address that merely contains ffff alone', () => {
    assert.equal(normalizeHost('2001:db8::ffff:1'), '2001:db8::ffff:1');
  });

  it('gives what the URL parser gives for IPv4 in any spelling, plain or mapped (the fast path included)', () => {
    const octet = fc.oneof(
      fc.integer({ min: 0, max: 255 }).map(String),
      fc.integer({ min: 0, max: 255 }).map((n) => `0${n}`),
    );
    fc.assert(
      fc.property(
        fc.tuple(octet, octet, octet, octet),
        fc.constantFrom('', '::ffff:', '::FFFF:'),
        (octets, prefix) => {
          const host = prefix + octets.join('.');
          assert.equal(normalizeHost(host), canonicalHost(host), host);
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it('is idempotent', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.mixedCase(fc.oneof(fc.ipV4(), fc.ipV6(), fc.domain())), fc.string()),
        (host) => {
          assert.equal(normalizeHost(normalizeHost(host)), normalizeHost(host));
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });
});

describe('isLoopback', () => {
  it('is true for localhost, 127.0.0.0/8, ::1 and their mapped and upper-case forms', () => {
    for (const host of ['localhost', 'LOCALHOST', '127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) {
      assert.equal(isLoopback(host), true, host);
    }
  });

  it('is false for other addresses and names', () => {
    for (const host of [
      '10.0.0.1',
      '128.0.0.1',
      '0.0.0.0',
      '::',
      '::2',
      'example.com',
      'localhost.example.com',
    ]) {
      assert.equal(isLoopback(host), false, host);
    }
  });
});

describe('isUnspecified', () => {
  it('is true for 0.0.0.0 and ::', () => {
    for (const host of ['0.0.0.0', '::', '::ffff:0.0.0.0']) assert.equal(isUnspecified(host), true, host);
  });

  it('is false for any real address', () => {
    for (const host of ['127.0.0.1', '::1', '10.0.0.0', 'localhost', '0.0.0.1']) {
      assert.equal(isUnspecified(host), false, host);
    }
  });
});
