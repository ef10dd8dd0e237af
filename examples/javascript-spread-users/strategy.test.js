// Native tests of the rule (node --test), on plain objects shaped as the host sends them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rank } from './strategy.js';

const GIB = 1n << 30n;
const request = { cores: 1, memory: GIB, gpus: 0, userKey: 7n, sameZone: true };

/** Columns from rows of [coresTotal, coresReserved, userSessions, memoryReserved?]. */
function candidates(rows) {
  const zeros = rows.map(() => 0);
  return {
    coresTotal: rows.map((r) => r[0]),
    coresReserved: rows.map((r) => r[1]),
    memoryTotal: rows.map(() => 16n * GIB),
    memoryReserved: rows.map((r) => r[3] ?? 0n),
    gpusTotal: zeros,
    gpusReserved: zeros,
    sessions: zeros,
    maxSessions: rows.map(() => 10),
    userSessions: rows.map((r) => r[2]),
    cpuLoad: zeros,
    memoryLoad: zeros,
  };
}

test("the user's own sessions count before load", () => {
  assert.deepEqual(rank(request, candidates([[8, 0, 2], [8, 7, 0], [8, 1, 1]])), [1, 2, 0]);
});

test('among equals the emptiest, then the lower index, wins', () => {
  assert.deepEqual(rank(request, candidates([[8, 4, 0], [8, 2, 0], [8, 2, 0]])), [1, 2, 0]);
});

test('memory counts when it is the fuller resource', () => {
  assert.deepEqual(rank(request, candidates([[8, 1, 0, 12n * GIB], [8, 2, 0]])), [1, 0]);
});

test('an overcommitted candidate still ranks by user sessions first', () => {
  assert.deepEqual(rank(request, candidates([[2, 8, 0], [8, 0, 1]])), [0, 1]);
});

test('no candidates, no ranking', () => {
  assert.deepEqual(rank(request, candidates([])), []);
});
