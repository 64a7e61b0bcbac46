// The reference JavaScript router: testers (`x-beta: 1`), previews
// (`?preview=1`) and clients in the configured networks' first octets go to
// the canary; everything else is left to the weights.
//
//   rules: [{ plugin: beta-router, config: { pool: canary, networks: ["10."] } }]
import { router, needs } from "../index.js";

export const { init, route } = router({
  init(config, pools) {
    const pool = (config && config.pool) || "canary";
    if (!pools.includes(pool)) throw new Error(`no pool \`${pool}\` (pools: ${pools.join(", ")})`);
    return { pool, networks: (config && config.networks) || [] };
  },
  needs: (s) => needs({ headers: ["x-beta"], query: ["preview"], clientAddress: s.networks.length > 0 }),
  route(s, req) {
    if (req.header("x-beta") === "1" || req.query("preview") === "1") return s.pool;
    const client = req.clientAddress();
    if (client && s.networks.some((n) => client.startsWith(n))) return s.pool;
    return null;
  },
});
