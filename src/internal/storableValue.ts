/**
 * Strings that do not come back from the store as they went in. PostgreSQL's `text` and `jsonb`
 * cannot hold a NUL character, and a lone UTF-16 surrogate has no UTF-8 form: the driver sends
 * U+FFFD in its place, so the cache would hold one value and the store another at the same version.
 * Refused for every store alike, so that a test on the in-memory layers fails where production would.
 *
 * @internal
 */

/** Where in an encoded value the first such string is, and what is wrong with it; `undefined` when there is none. */
export const findUnstorableString = (value: unknown): string | undefined => walk(value, "")

const flawOf = (text: string): string | undefined =>
  !text.isWellFormed() ? "an unpaired surrogate" : text.includes("\u0000") ? "a NUL character" : undefined

const walk = (value: unknown, path: string): string | undefined => {
  if (typeof value === "string") {
    const flaw = flawOf(value)
    return flaw === undefined ? undefined : `${path === "" ? "the value" : path} holds ${flaw}`
  }
  if (typeof value !== "object" || value === null) return undefined
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = walk(value[i], `${path}[${i}]`)
      if (found !== undefined) return found
    }
    return undefined
  }
  for (const name in value) {
    const field = path === "" ? name : `${path}.${name}`
    const flaw = flawOf(name)
    if (flaw !== undefined) return `the field name ${JSON.stringify(field)} holds ${flaw}`
    const found = walk((value as Record<string, unknown>)[name], field)
    if (found !== undefined) return found
  }
  return undefined
}
