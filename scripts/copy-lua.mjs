#!/usr/bin/env node
// Part of `npm run build`: tsc compiles only TypeScript, so the Lua scripts that src/store loads
// beside itself (src/store/lua/*.lua) are copied to the same place under dist/.
import { cpSync } from "node:fs";

const root = new URL("..", import.meta.url);
cpSync(new URL("src/store/lua", root), new URL("dist/store/lua", root), { recursive: true });
