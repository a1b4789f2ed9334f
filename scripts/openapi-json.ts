// Writes openapi/gatehouse.json from openapi/gatehouse.yaml (the source of truth), for the admin
// listener's GET /_gatehouse/openapi.json. test/unit/openapi.test.ts fails when it is stale.
// Usage: node --import tsx scripts/openapi-json.ts [--check]
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";

export const OPENAPI_YAML = new URL("../openapi/gatehouse.yaml", import.meta.url);
export const OPENAPI_JSON = new URL("../openapi/gatehouse.json", import.meta.url);

/** The JSON form of the YAML document (YAML anchors expanded), as committed. */
export function renderOpenApiJson(yamlText: string): string {
  return JSON.stringify(parse(yamlText, { maxAliasCount: -1 }), null, 2) + "\n";
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const want = renderOpenApiJson(readFileSync(OPENAPI_YAML, "utf8"));
  if (process.argv.includes("--check")) {
    let have = "";
    try {
      have = readFileSync(OPENAPI_JSON, "utf8");
    } catch {
      // missing: stale
    }
    if (have !== want) {
      console.error("openapi/gatehouse.json is stale: run `node --import tsx scripts/openapi-json.ts`");
      process.exit(1);
    }
  } else {
    writeFileSync(OPENAPI_JSON, want);
    console.log(`wrote ${fileURLToPath(OPENAPI_JSON)}`);
  }
}
