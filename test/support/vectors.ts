// Loads the shared spec vectors from ../shared/spec/vectors at test time (never copied into the repo).
import { readFileSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export function vectorsDir(): string {
  const candidates = [process.env.GATEHOUSE_VECTORS_DIR, join(repoRoot, "../shared/spec/vectors")].filter(Boolean) as string[];
  for (const c of candidates) if (existsSync(c)) return c;
  throw new Error(`spec vectors not found; looked in ${candidates.join(", ")} (set GATEHOUSE_VECTORS_DIR)`);
}

export function loadVectors<T = any>(name: string): T {
  return JSON.parse(readFileSync(join(vectorsDir(), `${name}.json`), "utf8")) as T;
}
