#!/usr/bin/env node
// Builds a JavaScript plugin into a Switchyard component:
//   node build.mjs PLUGIN.js OUT.wasm [router|policy]   (the world; router by default)
// ComponentizeJS (pinned in package.json) with every WASI feature off, so
// the component imports only Switchyard's interfaces, as the host requires.
import { componentize } from "@bytecodealliance/componentize-js";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const [entry, out, world = "router"] = process.argv.slice(2);
if (!entry || !out || !["router", "policy"].includes(world)) {
  console.error("usage: node build.mjs PLUGIN.js OUT.wasm [router|policy]");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const { component } = await componentize({
  sourcePath: resolve(entry),
  witPath: resolve(here, "../wit/switchyard.wit"),
  worldName: world,
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(out, component);
console.log(`${out}: ${(component.length / (1 << 20)).toFixed(1)} MiB`);
