// Switchyard router plugins in JavaScript. A plugin's module calls
// `router({ init, route, needs })` and exports what it returns: the WIT
// world's `init` and `route` (see ../wit/switchyard.wit). This module reads
// the packed request and maps pool names to the indexes the host expects,
// as the Rust SDK does; ComponentizeJS bundles it into the component.

import { write } from "switchyard:plugin/log@0.1.1";

/** `route`'s answer when the plugin has no opinion (the next rule, then the weights, decide). */
export const NO_OPINION = -1;
/** `route`'s answer for an error (the host counts a fault and uses the weights). */
export const ERROR = -2;
/** The name under which the client's address travels among the headers. */
export const CLIENT_ADDRESS = ":client-address";

const decoder = new TextDecoder("utf-8", { fatal: true });

/** A request as a router sees it: method, path, sticky key, and what `needs` declared. */
export class Request {
  constructor(method, path, stickyKey, headers, cookies) {
    this.method = method;
    this.path = path;
    this.stickyKey = stickyKey;
    this._headers = headers;
    this._cookies = cookies;
  }

  /** A declared header's first value (any case), or undefined. */
  header(name) {
    const lower = name.toLowerCase();
    for (const [n, v] of this._headers) if (n === lower) return v;
    return undefined;
  }

  /** A declared query parameter's first value (percent-decoded; the name case-sensitive), or undefined. */
  query(name) {
    for (const [n, v] of this._headers) if (n === "?" + name) return v;
    return undefined;
  }

  /** The client's address as the proxy saw it, when declared, or undefined. */
  clientAddress() {
    for (const [n, v] of this._headers) if (n === CLIENT_ADDRESS) return v;
    return undefined;
  }

  /** A declared cookie's value, or undefined. */
  cookie(name) {
    for (const [n, v] of this._cookies) if (n === name) return v;
    return undefined;
  }

  /** Reads the packed request (`route` in the WIT): strings as u32 length + UTF-8, little-endian. */
  static decode(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let at = 0;
    const u32 = () => {
      const n = view.getUint32(at, true);
      at += 4;
      return n;
    };
    const str = () => {
      const n = u32();
      if (at + n > bytes.length) throw new Error("request: a string runs past the end");
      const s = decoder.decode(bytes.subarray(at, at + n));
      at += n;
      return s;
    };
    const pairs = () => {
      const out = [];
      for (let i = u32(); i > 0; i--) out.push([str(), str()]);
      return out;
    };
    const method = str();
    const path = str();
    const stickyKey = view.getUint8(at++) ? str() : undefined;
    const headers = pairs();
    const cookies = pairs();
    if (at !== bytes.length) throw new Error("request: trailing bytes");
    return new Request(method, path, stickyKey, headers, cookies);
  }
}

/** What a router reads beyond method, path and sticky key. */
export function needs({ headers = [], cookies = [], query = [], clientAddress = false } = {}) {
  return {
    headers: [...headers, ...query.map((q) => "?" + q), ...(clientAddress ? [CLIENT_ADDRESS] : [])],
    cookies,
  };
}

/** Writes a line to the proxy's log (`debug`, `info`, `warn`, `error`). */
export function log(level, message) {
  write(level, String(message));
}

/**
 * Makes the WIT exports from a router written with plain values:
 * - `init(config, pools)`: `config` is the parsed JSON (null without one), `pools` the
 *   service's pool names; throw to refuse the rule; returns the router's state;
 * - `route(state, request)`: a pool name, or null/undefined for no opinion; throw for an error;
 * - `needs(state)`: what `route` reads (see `needs()`), asked once after `init`.
 */
export function router({ init, route, needs: wants = () => needs() }) {
  let state;
  let pools = [];
  return {
    init(configText, poolNames) {
      pools = poolNames;
      try {
        state = init(JSON.parse(configText), poolNames);
        return wants(state);
      } catch (e) {
        // The WIT's `result<needs, string>`: ComponentizeJS maps a thrown value to its error.
        throw String(e && e.message ? e.message : e);
      }
    },
    route(bytes) {
      try {
        const pool = route(state, Request.decode(bytes));
        if (pool === null || pool === undefined) return NO_OPINION;
        const i = pools.indexOf(pool);
        if (i < 0) {
          log("error", `route answered \`${pool}\`, which is not a pool (pools: ${pools.join(", ")})`);
          return ERROR;
        }
        return i;
      } catch (e) {
        log("error", `route failed: ${e && e.message ? e.message : e}`);
        return ERROR;
      }
    },
  };
}
