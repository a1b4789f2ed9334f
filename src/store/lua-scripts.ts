/**
 * The one loader of the Lua scripts in ./lua/ (each file starts with its KEYS/ARGV header).
 * `npm run build` copies the folder beside the compiled code, so the same relative URL works
 * from src/ (tsx) and dist/.
 */
import { readFileSync } from "node:fs";
import type { Redis } from "ioredis";

const loaded = new Map<string, string>();

/** The text of src/store/lua/{name}.lua (read once per process). */
export function luaScript(name: string): string {
  let text = loaded.get(name);
  if (text === undefined) {
    text = readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), "utf8");
    loaded.set(name, text);
  }
  return text;
}

/**
 * Defines each script as an ioredis command (EVALSHA with EVAL fallback) on `redis`, once per
 * connection: `commands` maps the command name to the script's file name.
 */
export function defineLuaCommands(redis: Redis, commands: Readonly<Record<string, string>>): void {
  for (const [command, file] of Object.entries(commands)) {
    if (!(command in redis)) redis.defineCommand(command, { lua: luaScript(file) });
  }
}
