// `getBatched`: `get` as an Effect Request, so that `Effect.forEach(keys, users.getBatched,
// { batching: true })` becomes `getMany` batches. The one module of the read path that uses
// Request / RequestResolver (which an Effect 4 line would change).
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import * as Request from "effect/Request"
import * as RequestResolver from "effect/RequestResolver"
import type { ReadError } from "../../WriteThrough.js"

interface GetRequest<K, A> extends Request.Request<Option.Option<A>, ReadError> {
  readonly key: K
}

/** A request per key, resolved in batches by `getMany`; `get` alone when the batch fails. */
export const make = <K, A>(
  getMany: (keys: ReadonlyArray<K>) => Effect.Effect<ReadonlyArray<Option.Option<A>>, ReadError>,
  get: (key: K) => Effect.Effect<Option.Option<A>, ReadError>
): ((key: K) => Effect.Effect<Option.Option<A>, ReadError>) => {
  const GetRequest = Request.of<GetRequest<K, A>>()
  const resolver = RequestResolver.makeBatched((requests: ReadonlyArray<GetRequest<K, A>>) =>
    getMany(requests.map((request) => request.key)).pipe(
      Effect.flatMap((results) =>
        Effect.forEach(requests, (request, i) => Request.succeed(request, results[i]!), { discard: true })
      ),
      // One bad key fails its own request only: the others are looked up without it.
      Effect.catchAll(() =>
        Effect.forEach(requests, (request) => Request.completeEffect(request, get(request.key)), {
          concurrency: "unbounded",
          discard: true
        })
      )
    )
  )
  return (key) => Effect.request(GetRequest({ key }), resolver)
}
