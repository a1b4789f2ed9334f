/**
 * Kahn's algorithm with a priority queue: the spec's "lexicographical topological ordering"
 * (state resolution v2, "Definitions"), reversed so that auth events come first.
 */

/** A binary min-heap of nodes ordered by `less`. */
class Heap<T> {
  private readonly items: T[] = [];
  constructor(private readonly less: (a: T, b: T) => boolean) {}
  get size(): number {
    return this.items.length;
  }
  push(x: T): void {
    const a = this.items;
    a.push(x);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): T | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.less(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

/**
 * Orders the nodes of `graph` (node → the nodes it points to, e.g. its auth events) so that
 * every node comes after the nodes it points to; among the nodes available at each step the
 * smallest by `less` comes first. Every node must be a key of `graph`. Nodes on a cycle (not
 * possible in an auth DAG) are left out.
 */
export function reverseTopologicalSort(graph: ReadonlyMap<string, ReadonlySet<string>>, less: (a: string, b: string) => boolean): string[] {
  const outdegree = new Map<string, number>();
  const parents = new Map<string, string[]>();
  const ready = new Heap<string>(less);
  for (const [node, edges] of graph) {
    outdegree.set(node, edges.size);
    if (edges.size === 0) ready.push(node);
    for (const e of edges) {
      let ps = parents.get(e);
      if (!ps) parents.set(e, (ps = []));
      ps.push(node);
    }
  }
  const out: string[] = [];
  for (let node = ready.pop(); node !== undefined; node = ready.pop()) {
    out.push(node);
    for (const p of parents.get(node) ?? []) {
      const d = outdegree.get(p)! - 1;
      outdegree.set(p, d);
      if (d === 0) ready.push(p);
    }
  }
  return out;
}
