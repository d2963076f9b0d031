/** SQL identifiers: the names the store is given, and how they go into its statements. */

const plainIdentifier = /^[A-Za-z_][A-Za-z0-9_$]*$/

/** A name the store accepts for the objects it creates itself (its sequence, its generic table). */
export const isPlain = (identifier: string): boolean => plainIdentifier.test(identifier)

export const quote = (identifier: string): string => `"${identifier.replace(/"/g, '""')}"`

/** A table's quoted name, in its schema when it has one (else the connection's current schema). */
export const qualified = (schema: string | undefined, name: string): string =>
  schema === undefined ? quote(name) : `${quote(schema)}.${quote(name)}`
