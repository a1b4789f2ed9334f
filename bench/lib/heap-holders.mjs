// node --max-old-space-size=6000 bench/lib/heap-holders.mjs A.heapsnapshot [B.heapsnapshot]: live self sizes by holder, where a
// node's holder is its nearest ancestor (first strong retainer on a shortest path from the root) that is an object of a named
// class (not Object/Array/Map/Set/…), with the property it holds it by: "RoomStore.eventCache > ByteLru.map". With B: what each
// holder gained (largest first). Bench tooling, never the product; see bench/README.md "Memory, 2026-12-05 (chain cache)".
import { readFileSync } from "node:fs";
const GENERIC = new Set(["Object", "Array", "Map", "Set", "WeakMap", "Promise", "system / Context", "(object properties)", "(object elements)", "Function", "Uint8Array", "Buffer", ""]);
function holders(f) {
  const s = JSON.parse(readFileSync(f, "utf8"));
  const m = s.snapshot.meta, nf = m.node_fields.length, ef = m.edge_fields.length;
  const types = m.node_types[0], etypes = m.edge_types[0];
  const it = m.node_fields.indexOf("type"), iname = m.node_fields.indexOf("name"), isz = m.node_fields.indexOf("self_size"), iec = m.node_fields.indexOf("edge_count");
  const nodes = s.nodes, edges = s.edges, strings = s.strings, n = nodes.length / nf;
  const retFrom = new Int32Array(n).fill(-1), retEdge = new Int32Array(n).fill(-1);
  // BFS from root (node 0) so each node's retainer is on a shortest path from the root (like DevTools' distance)
  const firstEdge = new Int32Array(n + 1);
  for (let i = 0, e = 0; i < n; i++) { firstEdge[i] = e; e += nodes[i * nf + iec] * ef; }
  firstEdge[n] = edges.length;
  const seen = new Uint8Array(n); const q = new Int32Array(n); let qh = 0, qt = 0; q[qt++] = 0; seen[0] = 1;
  while (qh < qt) {
    const i = q[qh++];
    for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += ef) {
      const et = etypes[edges[e]]; if (et === "weak" || et === "shortcut") continue;
      const to = edges[e + 2] / nf; if (seen[to]) continue; seen[to] = 1; retFrom[to] = i; retEdge[to] = e; q[qt++] = to;
    }
  }
  const key = new Array(n);
  const isNamed = (i) => { const t = types[nodes[i * nf + it]]; const nm = strings[nodes[i * nf + iname]]; return t === "object" && !GENERIC.has(nm) && !nm.startsWith("system"); };
  const ename = (e) => { const et = etypes[edges[e]]; return et === "element" || et === "hidden" ? `[]` : String(strings[edges[e + 1]]).slice(0, 40); };
  const out = new Map(); let total = 0;
  for (let k = 0; k < qt; k++) {
    const i = q[k]; // BFS order: parents first
    const p = retFrom[i];
    if (p === -1) key[i] = "(root)";
    else if (isNamed(p)) {
      const nm = strings[nodes[p * nf + iname]];
      key[i] = `${nm}.${ename(retEdge[i])}`;
      if (["Lru", "ByteLru", "LayeredIdSet", "LayeredMap", "AuthChainCache"].includes(nm)) key[i] = `${key[p]} > ${key[i]}`;
    }
    else key[i] = key[p] === "(root)" || key[p] === undefined ? `(${types[nodes[p*nf+it]]}:${String(strings[nodes[p*nf+iname]]).slice(0,30)}).${ename(retEdge[i])}` : key[p];
    const sz = nodes[i * nf + isz]; total += sz;
    const g = out.get(key[i]) ?? { n: 0, size: 0 }; g.n++; g.size += sz; out.set(key[i], g);
  }
  return { out, total };
}
const a = holders(process.argv[2]);
console.log("total A", (a.total / 1048576).toFixed(1), "MB");
if (!process.argv[3]) { for (const [k, g] of [...a.out].sort((x, y) => y[1].size - x[1].size).slice(0, 40)) console.log((g.size / 1024).toFixed(0).padStart(8), "kB", String(g.n).padStart(8), k); process.exit(0); }
const b = holders(process.argv[3]);
console.log("total B", (b.total / 1048576).toFixed(1), "MB");
const keys = new Set([...a.out.keys(), ...b.out.keys()]);
const rows = [...keys].map((k) => ({ k, dn: (b.out.get(k)?.n ?? 0) - (a.out.get(k)?.n ?? 0), ds: (b.out.get(k)?.size ?? 0) - (a.out.get(k)?.size ?? 0), s: b.out.get(k)?.size ?? 0 }));
rows.sort((x, y) => y.ds - x.ds);
for (const r of rows.slice(0, 30)) console.log((r.ds / 1024).toFixed(0).padStart(8), "kB", String(r.dn).padStart(8), "objs", (r.s / 1048576).toFixed(2).padStart(6), "MB now ", r.k);
console.log("...shrunk most:");
for (const r of rows.slice(-8)) console.log((r.ds / 1024).toFixed(0).padStart(8), "kB", String(r.dn).padStart(8), "objs", (r.s / 1048576).toFixed(2).padStart(6), "MB now ", r.k);
