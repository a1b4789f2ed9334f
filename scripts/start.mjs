#!/usr/bin/env node
// `npm start`: set up (dependencies, redis-server when missing and we may install it) and run
// `gatehouse serve` with the embedded Redis default. Uses only Node built-ins, so it works on a
// fresh clone before `npm ci`.
import { spawnSync, spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";

const root = new URL("..", import.meta.url).pathname;
const run = (cmd, args, opts = {}) => spawnSync(cmd, args, { stdio: "inherit", cwd: root, ...opts });

const lock = `${root}package-lock.json`;
const marker = `${root}node_modules/.package-lock.json`;
if (!existsSync(marker) || statSync(marker).mtimeMs < statSync(lock).mtimeMs) {
  console.log("gatehouse: installing dependencies (npm ci)…");
  const r = run("npm", ["ci", "--no-audit", "--no-fund"]);
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const hasRedis = ["/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"].some(existsSync) ||
  spawnSync("sh", ["-c", "command -v redis-server"]).status === 0;
if (!process.env.REDIS_URL && !hasRedis) {
  if (process.getuid?.() === 0 && existsSync("/usr/bin/apt-get")) {
    console.log("gatehouse: installing redis-server (apt-get)…");
    run("apt-get", ["update", "-q"]);
    const r = run("apt-get", ["install", "-y", "-q", "--no-install-recommends", "redis-server"], { env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
    if (r.status !== 0) process.exit(r.status ?? 1);
  } else {
    console.error("gatehouse: redis-server is not installed. Run `sudo apt-get install -y redis-server`, or set REDIS_URL to an existing Redis.");
    process.exit(1);
  }
}

const child = spawn(process.execPath, [`${root}bin/gatehouse.mjs`, "serve", ...process.argv.slice(2)], { stdio: "inherit", cwd: process.cwd() });
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
