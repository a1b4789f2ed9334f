#!/usr/bin/env node
// The `gatehouse` command. In a checkout (src/ present, dev dependencies installed) it runs the
// TypeScript source through tsx, so edits need no build; otherwise it runs the compiled dist/
// (`npm run build`), as in the container image, which ships neither src/ nor tsx.
import { existsSync } from "node:fs";

const src = new URL("../src/cli.ts", import.meta.url);
const dist = new URL("../dist/cli.js", import.meta.url);

async function tsxRegister() {
  try {
    return (await import("tsx/esm/api")).register;
  } catch {
    return null;
  }
}

const register = existsSync(src) ? await tsxRegister() : null;
if (register) {
  register();
  await import(src.href);
} else if (existsSync(dist)) {
  await import(dist.href);
} else {
  console.error("gatehouse: neither the compiled dist/cli.js nor tsx (a dev dependency) is here: run `npm ci` (development) or `npm run build`");
  process.exit(1);
}
