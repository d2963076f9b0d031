// A tagged, yieldable error class whose prototype carries a type id, as @effect/platform's
// `TypeIdError` builds @effect/sql's `SqlError`. Kept here so that the library's errors do not
// import @effect/platform, one of the packages an Effect 4 line would replace.
import type * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import type { Simplify } from "effect/Types"

export const TypeIdError = <const TypeId extends symbol, const Tag extends string>(
  typeId: TypeId,
  tag: Tag
): new <A extends Record<string, any>>(
  args: Simplify<A>
) => Cause.YieldableError & Record<TypeId, TypeId> & { readonly _tag: Tag } & Readonly<A> => {
  class Base extends Data.Error<{}> {
    readonly _tag = tag
  }
  // On the prototype, not the instance: the id stays out of logs, JSON and structural equality.
  ;(Base.prototype as any)[typeId] = typeId
  ;(Base.prototype as any).name = tag
  return Base as any
}
