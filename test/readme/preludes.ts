/**
 * The preludes a markdown block may name in `<!-- prelude: NAME -->` (see `blocks.ts`): code the
 * block's module gets inlined before the block's own. Each is the definitions the documentation
 * shows once and then refers to, word for word as shown there, so that a reader who copied them
 * once can paste the later blocks after them.
 *
 * They are strings, not modules, so that `readmeModules` stays pure and its modules stay
 * self-contained (a consumer project type-checks them without this directory).
 */

/** `User` and `Users`, as the README's first program defines them. */
const users = `
import { Schema } from "effect"
import { WriteThrough } from "effect-write-through"

class User extends Schema.Class<User>("User")({
  id: Schema.String,
  name: Schema.String,
  email: Schema.String
}) {}

class Users extends WriteThrough.Service<Users>()("app/Users", {
  key: Schema.String,
  value: User,
  table: { name: "users", primaryKey: "id" },
  ttl: "1 hour"
}) {}
`

export const preludes: Readonly<Record<string, string>> = {
  users
}
