// A zonebroker load-balancing strategy.
//
// `rank` orders the candidates for one session, best first; leave a candidate out to refuse
// it. Candidates come as columns (`c.sessions[i]` is candidate i's session count) sorted by
// id: ties broken by index are reproducible. WIT names arrive in camelCase and 64-bit
// integers as BigInt. componentize-js turns the `balancer` export into the `balancer`
// interface of world `strategy` (wit/zonebroker.wit).

const freeSlots = (c, i) => Math.max(c.maxSessions[i] - c.sessions[i], 0);

/** The candidate with the most free session slots first. */
export function rank(request, c) {
  const order = Array.from({ length: c.sessions.length }, (_, i) => i);
  order.sort((a, b) => freeSlots(c, b) - freeSlots(c, a) || a - b);
  return order;
}

export const balancer = { rank };
