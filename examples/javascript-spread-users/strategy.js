// `spread-users` in JavaScript (the same rule as the Rust example in examples/spread-users):
// place a user's next session on the candidate running the fewest of that user's sessions,
// so that one agent failing takes down as few of a user's sessions as possible. Among
// equals, prefer the least loaded; among those, the lower index (candidates arrive sorted
// by id).
//
// componentize-js turns the `balancer` export into the `balancer` interface of world
// `strategy` (wit/zonebroker.wit). WIT names arrive in camelCase (`coresTotal`) and u64
// values as BigInt. `rank` is also exported on its own, for the native tests.

/** Reserved over total; unknown size (pool servers) is empty, or full once used. */
function fraction(reserved, total) {
  if (total > 0) return reserved / total;
  return reserved > 0 ? 1 : 0;
}

/** The larger of the reserved cores and memory fractions (Kasm's measure of load). */
function load(c, i) {
  return Math.max(
    fraction(c.coresReserved[i], c.coresTotal[i]),
    fraction(Number(c.memoryReserved[i]), Number(c.memoryTotal[i])),
  );
}

/** Indices of the candidates, best first. */
export function rank(request, c) {
  // One number orders by (the user's sessions, load), as the Rust example does: a load is
  // below 2 unless an override shrank an agent below what it already runs, so cap it just
  // under 2.
  const key = (i) => c.userSessions[i] * 2 + Math.min(load(c, i), 1.999);
  const order = Array.from({ length: c.sessions.length }, (_, i) => i);
  const keys = order.map(key);
  order.sort((a, b) => keys[a] - keys[b] || a - b);
  return order;
}

export const balancer = { rank };
