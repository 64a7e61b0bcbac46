// Switchyard policy plugins in JavaScript: `policy({ init, decide })` makes
// the WIT world's exports (see ../wit/switchyard.wit); `hold`, `promote`,
// `rollback` and `setWeights` are the verdicts, as in the Rust SDK. Counts
// arrive as BigInt (u64): `count()` and `errorRate()` turn them into numbers.

export { log } from "./index.js";

/** Stay (at a step's end: wait for more data). */
export const hold = (why) => ({ decision: { tag: "hold" }, explanation: why });
/** The candidate is good: advance once the hold is done, or switch. */
export const promote = (why) => ({ decision: { tag: "promote" }, explanation: why });
/** Roll back, or switch back, at once. */
export const rollback = (why) => ({ decision: { tag: "rollback", val: String(why) }, explanation: why });
/** Canary: these weights now (`{ stable: 90, canary: 10 }`), within the step. */
export const setWeights = (weights, why) => ({
  decision: { tag: "set-weights", val: Object.entries(weights).map(([pool, w]) => [pool, w >>> 0]) },
  explanation: why,
});

/** A u64 count as a number. */
export const count = (n) => Number(n);

/** A pool window's failed share (its 5xx over its requests; 0 without requests). */
export function errorRate(window) {
  const requests = count(window.requests);
  return requests === 0 ? 0 : count(window.status[4]) / requests;
}

/** The window of pool `name` among `pools`, or undefined. */
export const windowOf = (pools, name) => pools.find((p) => p.name === name);

/**
 * Makes the WIT exports from a policy written with plain values:
 * - `init(config)`: the parsed JSON config (null without one); throw to refuse it; returns the state;
 * - `decide(state, context, pools)`: one of the verdicts above; a throw is a fault (the rollout rolls
 *   back after `max_faults` in a row).
 */
export function policy({ init, decide }) {
  let state;
  return {
    init(configText) {
      try {
        state = init(JSON.parse(configText));
      } catch (e) {
        throw String(e && e.message ? e.message : e);
      }
    },
    decide(context, pools) {
      return decide(state, context, pools);
    },
  };
}
