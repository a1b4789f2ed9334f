#!/usr/bin/env node
// Runs the TypeScript source through tsx in a checkout; runs the compiled dist/ in images that
// ship only dist/.
import { existsSync } from "node:fs";

const src = new URL("../src/cli.ts", import.meta.url);
if (existsSync(src)) {
  const { register } = await import("tsx/esm/api");
  register();
  await import(src.href);
} else {
  await import(new URL("../dist/cli.js", import.meta.url).href);
}
