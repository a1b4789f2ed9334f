/**
 * A private network and mount namespace for the named-server interop tests and demo (root only):
 * `unshare --net --mount` gives a namespace whose only interface is lo, and in which
 * /etc/resolv.conf (and the Synapse chroot's, when given) can point at a test DNS server without
 * touching the machine's. Nothing started inside reaches or meets anything outside.
 * Development only.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const NETNS_ENV = "GATEHOUSE_INTEROP_NETNS";

/** Whether this process runs inside such a namespace (set by reexecInPrivateNamespace). */
export function inPrivateNamespace(): boolean {
  return process.env[NETNS_ENV] === "1";
}

/** Whether `unshare --net --mount` works here (root, and a kernel that allows it). */
export function privateNamespaceAvailable(): boolean {
  if (process.getuid?.() !== 0) return false;
  return spawnSync("unshare", ["--net", "--mount", "true"], { stdio: "ignore" }).status === 0;
}

/** Runs `argv` (a node command line) again inside a new namespace; resolves to its exit code. */
export function runInPrivateNamespace(argv: string[]): number {
  const r = spawnSync("unshare", ["--net", "--mount", "--fork", "--kill-child", ...argv], {
    stdio: "inherit",
    env: { ...process.env, [NETNS_ENV]: "1" },
  });
  return r.status ?? 1;
}

/**
 * Inside the namespace: lo up, and `nameserver` bind-mounted as /etc/resolv.conf (and over each
 * extra resolv.conf that exists, e.g. the Synapse chroot's). Mounts vanish with the namespace.
 */
export function setUpPrivateNamespace(nameserver: string, extraResolvConfs: string[] = []): void {
  const sh = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { stdio: "inherit" });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status})`);
  };
  sh("ip", ["link", "set", "lo", "up"]);
  const resolv = join(mkdtempSync(join(tmpdir(), "gatehouse-netns-")), "resolv.conf");
  writeFileSync(resolv, `nameserver ${nameserver}\noptions timeout:1 attempts:2\n`, { mode: 0o644 });
  sh("mount", ["--bind", resolv, "/etc/resolv.conf"]);
  for (const f of extraResolvConfs) if (existsSync(f)) sh("mount", ["--bind", resolv, f]);
}
