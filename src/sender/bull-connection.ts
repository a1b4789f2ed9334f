/**
 * The sender's own Redis connection for BullMQ, and the closing of every connection BullMQ makes
 * from it.
 *
 * Why: on a Redis Cluster, a test process of the sender suite sometimes never exited after its
 * last test (2026-12-04 under Node 24, reproduced here under Node 20 with one queue per shard:
 * 5 minutes idle, no CPU, an empty JS stack; the file then failed on --test-timeout). What kept it
 * alive was one ioredis connection to a replica, named by BullMQ for a worker of the closed
 * sender (`<prefix>:bull:<base64 queue name>`, last command READONLY, idle since the close; the
 * process's active resources after every cleanup: two pipes and that one TCP socket): a node
 * connection of a BullMQ worker's duplicated Cluster client, connected around the close and owned
 * by nothing any more. BullMQ's own "reconnect the cluster" recovery was instrumented and not
 * taken in the failing run; ioredis connects a lazy node (replicas are lazy node connections) on
 * the first command sent to it, quit included, which is the likely path — not proven.
 *
 * The fix: BullMQ gets a connection of the sender's own; every client duplicated from it (BullMQ's
 * blocking connections) and every node connection a duplicated Cluster opens are tracked, and
 * after the workers and queues closed, each is sealed (connect() refuses) and disconnected. Same
 * code on a single Redis (where nothing leaked, and closing what is already closed is a no-op).
 */
import { Cluster, type Redis } from "ioredis";

export class BullConnection {
  readonly connection: Redis;
  private readonly clients = new Set<Redis | Cluster>();
  private readonly nodes = new Set<Redis>();
  private sealed = false;

  constructor(base: Redis) {
    this.connection = base.duplicate();
    this.track(this.connection);
  }

  private track(client: Redis | Cluster): void {
    this.clients.add(client);
    if (client instanceof Cluster) client.on("+node", (node: Redis) => this.nodes.add(node));
    const duplicate = client.duplicate.bind(client) as (...args: unknown[]) => Redis | Cluster;
    (client as { duplicate: (...args: unknown[]) => Redis | Cluster }).duplicate = (...args: unknown[]) => {
      const d = duplicate(...args);
      if (this.sealed) seal(d);
      else this.track(d);
      return d;
    };
  }

  /** Connections still open (tests). */
  get openConnections(): number {
    let n = 0;
    for (const c of this.clients) if (!(c instanceof Cluster) && c.status !== "end") n++;
    for (const c of this.nodes) if (c.status !== "end") n++;
    return n;
  }

  /** After BullMQ's workers and queues closed: nothing it made may connect or stay connected. */
  close(): void {
    this.sealed = true;
    for (const c of this.clients) seal(c);
    for (const n of this.nodes) seal(n);
  }
}

function seal(client: Redis | Cluster): void {
  (client as { connect: () => Promise<void> }).connect = () => Promise.reject(new Error("Gatehouse sender: connection closed"));
  client.disconnect();
}
