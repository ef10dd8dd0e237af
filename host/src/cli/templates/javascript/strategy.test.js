// Native tests of the rule (`node --test`), on objects shaped as the host sends them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rank } from './strategy.js';

const request = { cores: 1, memory: 1n << 30n, gpus: 0, userKey: 7n, sameZone: true };

/** Columns from rows of [sessions, maxSessions]. */
function candidates(rows) {
  const zeros = rows.map(() => 0);
  return {
    coresTotal: rows.map(() => 8),
    coresReserved: zeros,
    memoryTotal: rows.map(() => 16n << 30n),
    memoryReserved: rows.map(() => 0n),
    gpusTotal: zeros,
    gpusReserved: zeros,
    sessions: rows.map((r) => r[0]),
    maxSessions: rows.map((r) => r[1]),
    userSessions: zeros,
    cpuLoad: zeros,
    memoryLoad: zeros,
  };
}

test('most free slots first', () => {
  assert.deepEqual(rank(request, candidates([[3, 4], [1, 4]])), [1, 0]);
});

test('no candidates, no ranking', () => {
  assert.deepEqual(rank(request, candidates([])), []);
});
