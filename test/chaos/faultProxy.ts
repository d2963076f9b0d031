// A TCP proxy that can delay, withhold or reset the traffic between a client and a server. It only
// forwards bytes, so it works for any protocol; the chaos workload puts it in front of Redis.
import { Effect } from "effect"
import * as net from "node:net"
import { performance } from "node:perf_hooks"

export type ProxyMode =
  | { readonly _tag: "Pass" }
  /** Every chunk, in both directions, is forwarded `millis` after it arrived; order is preserved. */
  | { readonly _tag: "Delay"; readonly millis: number }
  /**
   * Nothing is forwarded either way; the held bytes are delivered, in order, when the mode returns to
   * Pass or Delay, like a partition that heals with TCP retransmission.
   */
  | { readonly _tag: "Blackhole" }

export interface FaultProxy {
  readonly port: number
  /** `redis://127.0.0.1:${port}` */
  readonly url: string
  readonly mode: () => ProxyMode
  readonly setMode: (mode: ProxyMode) => void
  /** Abruptly resets every open connection (both sides, TCP RST); new connections are accepted. Returns how many. */
  readonly resetConnections: () => number
  readonly stats: () => { readonly accepted: number; readonly open: number; readonly resets: number }
  /** Stops listening and destroys every connection, held bytes and all. */
  readonly close: () => Promise<void>
}

/** A chunk, or `null` for the sender's FIN, stamped with when it reached the proxy. */
interface Held {
  readonly chunk: Buffer | null
  readonly arrived: number
}

/** One direction of one connection. Only the head of `queue` is ever written, so bytes cannot be reordered. */
interface Direction {
  readonly to: net.Socket
  readonly queue: Array<Held>
  timer: NodeJS.Timeout | undefined
}

interface Connection {
  readonly client: net.Socket
  readonly upstream: net.Socket
  readonly directions: readonly [Direction, Direction]
}

export const startFaultProxy = (
  target: { readonly host: string; readonly port: number },
  options?: { readonly port?: number }
): Promise<FaultProxy> => {
  let mode: ProxyMode = { _tag: "Pass" }
  let accepted = 0
  let resets = 0
  const connections = new Set<Connection>()
  const whenNoConnections: Array<() => void> = []

  const pump = (direction: Direction): void => {
    clearTimeout(direction.timer)
    direction.timer = undefined
    if (mode._tag === "Blackhole") return
    while (direction.queue.length > 0) {
      const head = direction.queue[0]!
      // The delay is measured from arrival with the *current* setting: a changed delay moves the
      // head's deadline, and everything behind it waits for the head.
      const wait = mode._tag === "Delay" ? head.arrived + mode.millis - performance.now() : 0
      if (wait > 0) {
        direction.timer = setTimeout(() => pump(direction), wait)
        return
      }
      direction.queue.shift()
      if (direction.to.destroyed) continue
      if (head.chunk === null) direction.to.end()
      else direction.to.write(head.chunk)
    }
  }

  const drop = (connection: Connection): void => {
    for (const direction of connection.directions) {
      clearTimeout(direction.timer)
      direction.queue.length = 0
    }
  }

  const forward = (from: net.Socket, direction: Direction, other: net.Socket, connection: Connection): void => {
    let ended = false
    const hold = (chunk: Buffer | null) => {
      direction.queue.push({ chunk, arrived: performance.now() })
      pump(direction)
    }
    from.on("data", (chunk: Buffer) => hold(chunk))
    // A FIN travels through the queue like data, so a graceful close reaches the other side only
    // after the bytes sent before it (a Redis `+OK` to QUIT, say).
    from.on("end", () => {
      ended = true
      hold(null)
    })
    // ECONNRESET, EPIPE and refused upstream connections are normal here; 'close' handles them.
    from.on("error", () => {})
    from.on("close", (hadError) => {
      if (!ended || hadError) {
        drop(connection)
        other.destroy()
      }
      if (connection.client.destroyed && connection.upstream.destroyed) {
        drop(connection)
        connections.delete(connection)
        if (connections.size === 0) whenNoConnections.splice(0).forEach((resolve) => resolve())
      }
    })
  }

  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    accepted++
    const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true })
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    const toUpstream: Direction = { to: upstream, queue: [], timer: undefined }
    const toClient: Direction = { to: client, queue: [], timer: undefined }
    const connection: Connection = { client, upstream, directions: [toUpstream, toClient] }
    connections.add(connection)
    forward(client, toUpstream, upstream, connection)
    forward(upstream, toClient, client, connection)
  })
  server.on("error", () => {})

  let closing: Promise<void> | undefined
  // Resolves once every socket has emitted 'close', so `stats().open` is 0 by then.
  const close = (): Promise<void> =>
    (closing ??= new Promise<void>((resolve) => {
      const drained = new Promise<void>((resolve) =>
        connections.size === 0 ? resolve() : whenNoConnections.push(resolve)
      )
      for (const connection of connections) {
        drop(connection)
        connection.client.destroy()
        connection.upstream.destroy()
      }
      // server.close() waits for the accepted sockets, which are already going.
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()))
      void Promise.all([drained, stopped]).then(() => resolve())
    }))

  return new Promise<FaultProxy>((resolve, reject) => {
    server.once("error", reject)
    server.listen(options?.port ?? 0, "127.0.0.1", () => {
      server.off("error", reject)
      const port = (server.address() as net.AddressInfo).port
      resolve({
        port,
        url: `redis://127.0.0.1:${port}`,
        mode: () => mode,
        setMode: (next) => {
          mode = next
          for (const connection of connections) connection.directions.forEach(pump)
        },
        resetConnections: () => {
          let count = 0
          for (const connection of connections) {
            if (connection.client.destroyed && connection.upstream.destroyed) continue
            drop(connection)
            for (const socket of [connection.client, connection.upstream]) {
              if (!socket.destroyed) socket.resetAndDestroy()
            }
            count++
          }
          resets += count
          return count
        },
        stats: () => ({ accepted, open: connections.size, resets }),
        close
      })
    })
  })
}

/** The proxy for the current scope; closed when the scope closes. */
export const faultProxy = (
  target: { readonly host: string; readonly port: number },
  options?: { readonly port?: number }
) =>
  Effect.acquireRelease(
    Effect.promise(() => startFaultProxy(target, options)),
    (proxy) => Effect.promise(() => proxy.close())
  )
