// The reference JavaScript policy: rolls back a candidate whose error rate
// is over the budget once it has `min_requests`, promotes one within it,
// and holds while the evidence is thin.
//
//   analysis: { policy: { plugin: error-budget, config: { max_error_rate: 0.05, min_requests: 50 } } }
import { policy, hold, promote, rollback, windowOf, errorRate, count } from "../policy.js";

export const { init, decide } = policy({
  init(config) {
    const c = config || {};
    const max = c.max_error_rate ?? 0.05;
    if (!(max >= 0 && max <= 1)) throw new Error(`max_error_rate must be between 0 and 1, not ${max}`);
    return { max, min: c.min_requests ?? 50 };
  },
  decide(s, context, pools) {
    const candidate = windowOf(pools, context.candidate);
    if (!candidate || count(candidate.requests) < s.min) {
      return hold(`${candidate ? count(candidate.requests) : 0} of the ${s.min} requests needed`);
    }
    const rate = errorRate(candidate);
    const figures = `${(rate * 100).toFixed(2)}% errors over ${count(candidate.requests)} requests`;
    return rate > s.max ? rollback(`${figures}, above ${(s.max * 100).toFixed(2)}%`) : promote(figures);
  },
});
