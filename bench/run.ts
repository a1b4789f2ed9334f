/**
 * `npm run bench` (node --import tsx bench/run.ts). Runs every bench in turn; add new ones here.
 * BENCH_SECONDS sets the measuring time per row (default 1).
 */
import { cpus } from "node:os";
import { cryptoBench } from "./crypto.js";

const seconds = Number(process.env.BENCH_SECONDS ?? "1");
if (!(seconds > 0)) throw new Error(`BENCH_SECONDS must be a positive number, got ${process.env.BENCH_SECONDS}`);

console.log(`# Gatehouse benchmarks: node ${process.version}, ${cpus().length} CPU(s), ${cpus()[0]?.model ?? "unknown CPU"}`);
cryptoBench({ seconds });
