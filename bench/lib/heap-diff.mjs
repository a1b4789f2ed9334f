// node --max-old-space-size=4000 bench/lib/heap-diff.mjs A.heapsnapshot [B.heapsnapshot]: V8 heap snapshot self sizes by
// type and constructor; with two snapshots, what B gained over A (largest first). Bench tooling, never the product.
import { readFileSync } from "node:fs";
function agg(f) {
  const s = JSON.parse(readFileSync(f, "utf8"));
  const m = s.snapshot.meta, nf = m.node_fields.length, types = m.node_types[0];
  const it = m.node_fields.indexOf("type"), iname = m.node_fields.indexOf("name"), isz = m.node_fields.indexOf("self_size");
  const out = new Map(); let total = 0;
  for (let i = 0; i < s.nodes.length; i += nf) {
    const t = types[s.nodes[i + it]]; let name = s.strings[s.nodes[i + iname]];
    if (t === "string" || t === "concatenated string" || t === "sliced string") name = "(string)";
    else if (t === "code") name = "(code)"; else if (t === "closure") name = "(closure)"; else if (t === "number") name = "(number)";
    else if (t === "array") name = "(array) " + name.slice(0, 40); else if (t === "hidden") name = "(hidden) " + name.slice(0, 40);
    else name = t + " " + name.slice(0, 60);
    const k = name; const e = out.get(k) ?? { n: 0, size: 0 }; e.n++; e.size += s.nodes[i + isz]; total += s.nodes[i + isz]; out.set(k, e);
  }
  return { out, total };
}
const a = agg(process.argv[2]);
console.log("total A", (a.total / 1048576).toFixed(1), "MB");
if (process.argv[3]) {
  const b = agg(process.argv[3]);
  console.log("total B", (b.total / 1048576).toFixed(1), "MB");
  const keys = new Set([...a.out.keys(), ...b.out.keys()]);
  const rows = [...keys].map((k) => ({ k, dn: (b.out.get(k)?.n ?? 0) - (a.out.get(k)?.n ?? 0), ds: (b.out.get(k)?.size ?? 0) - (a.out.get(k)?.size ?? 0), s: b.out.get(k)?.size ?? 0 }));
  rows.sort((x, y) => y.ds - x.ds);
  for (const r of rows.slice(0, 30)) console.log((r.ds / 1024).toFixed(0).padStart(8), "kB", String(r.dn).padStart(8), "objs", (r.s / 1048576).toFixed(1).padStart(6), "MB now ", r.k);
} else {
  const rows = [...a.out.entries()].sort((x, y) => y[1].size - x[1].size);
  for (const [k, e] of rows.slice(0, 30)) console.log((e.size / 1048576).toFixed(1).padStart(6), "MB", String(e.n).padStart(8), k);
}
