/**
 * The README block checker's first half: every ```ts block of a markdown document becomes one
 * complete TypeScript module, ready to be type-checked against the package (see `check.ts`, which
 * does that against the repository's sources, and the pack-and-consume test, which does it against
 * the packed tarball).
 *
 * The scheme:
 *
 * - Each block fenced as ```ts (or ```typescript) becomes one module, named
 *   `<prefix>-<NN>-<slug>.ts`: the prefix is `readme` unless told otherwise, NN the block's
 *   1-based position among the document's ts blocks, and the slug is made from the nearest heading
 *   above the block, as in `readme-03-define-an-entity.ts`.
 * - A block is complete on its own, except for what a prelude gives it. A prelude is named in an
 *   HTML comment on the line before the block (blank lines between are allowed):
 *   `<!-- prelude: users -->`, or several in order, `<!-- prelude: one, two -->`. GitHub does not
 *   render the comment. The preludes are the code in `preludes.ts` (for example `users`: the
 *   `User` class and the `Users` entity of the README's first program); the prose around such a
 *   block says where its names come from.
 * - A prelude is inlined, never imported: a module's source is the merged imports of its preludes
 *   and of the block (one `import { ... } from "x"` per module specifier), then the preludes'
 *   code, then the block's code with its import lines blanked (so that a line of the block keeps
 *   its offset, and diagnostics can be mapped back to the markdown), then `export {}` (so that
 *   every module is a module, not a script sharing one global scope with the others).
 * - A module may import only from `effect-write-through`, `effect-write-through/testing`,
 *   `effect`, `@effect/sql`, `@effect/sql-pg`, `@effect/platform`, `@effect/platform-node`,
 *   `@effect/experimental`, `ioredis` and `node:*` (plus what `extraImports` allows): what a
 *   consumer that followed the README's install line has.
 * - A placeholder is refused: a comment that is an ellipsis (`// ...`), or a block comment alone
 *   between brackets (`.pipe(/* Cache and Store as above *\/)`). It may well type-check, while a
 *   reader cannot run it.
 *
 * Everything here is pure (no I/O): a problem (an unknown prelude, a refused import, a placeholder)
 * is thrown as a `ReadmeBlockError` naming the markdown line.
 */
import { preludes as builtInPreludes } from "./preludes.js"

/** One module made of one ts block. */
export interface ReadmeModule {
  readonly name: string
  readonly source: string
}

/** A module with what it takes to map a diagnostic back to the markdown. */
export interface ReadmeBlock extends ReadmeModule {
  /** The 1-based markdown line of the block's first line of code (the one after the fence). */
  readonly markdownLine: number
  /** The 1-based module line that holds the block's first line of code. */
  readonly firstBlockLine: number
  /** How many lines of code the block has. */
  readonly blockLines: number
  /** The preludes inlined, by name. */
  readonly preludes: ReadonlyArray<string>
}

export interface ReadmeOptions {
  /** The modules' name prefix. Default `"readme"`. */
  readonly prefix?: string
  /** Module specifiers allowed besides the default list (exact names). */
  readonly extraImports?: ReadonlyArray<string>
  /** The preludes by name. Default: the ones in `preludes.ts`. */
  readonly preludes?: Readonly<Record<string, string>>
  /**
   * Called with each block's problem; the block is then left out and the others are still made.
   * Without it, the first problem is thrown.
   */
  readonly onError?: (error: ReadmeBlockError) => void
}

export class ReadmeBlockError extends Error {
  constructor(
    readonly markdownLine: number,
    message: string
  ) {
    super(`line ${markdownLine}: ${message}`)
    this.name = "ReadmeBlockError"
  }
}

/** The module specifiers a block may import from; `node:*` is allowed besides. */
export const allowedImports: ReadonlyArray<string> = [
  "effect-write-through",
  "effect-write-through/testing",
  "effect",
  "@effect/sql",
  "@effect/sql-pg",
  "@effect/platform",
  "@effect/platform-node",
  "@effect/experimental",
  "ioredis"
]

/** Every ts block of `markdown` as a complete module: see the scheme above. */
export const readmeModules = (markdown: string, options?: ReadmeOptions): ReadonlyArray<ReadmeModule> =>
  readmeBlocks(markdown, options).map(({ name, source }) => ({ name, source }))

/** As `readmeModules`, with the line mapping of each module. */
export const readmeBlocks = (markdown: string, options: ReadmeOptions = {}): ReadonlyArray<ReadmeBlock> => {
  const prefix = options.prefix ?? "readme"
  const allowed = new Set([...allowedImports, ...(options.extraImports ?? [])])
  const preludeSources = options.preludes ?? builtInPreludes
  return fencedBlocks(markdown)
    .filter((block) => block.language === "ts" || block.language === "typescript")
    .flatMap((block, index): ReadonlyArray<ReadmeBlock> => {
      try {
        return [makeModule(block, index, prefix, allowed, preludeSources)]
      } catch (error) {
        if (!(error instanceof ReadmeBlockError) || options.onError === undefined) throw error
        options.onError(error)
        return []
      }
    })
}

const makeModule = (
  block: FencedBlock,
  index: number,
  prefix: string,
  allowed: ReadonlySet<string>,
  preludeSources: Readonly<Record<string, string>>
): ReadmeBlock => {
  const name = `${prefix}-${String(index + 1).padStart(2, "0")}-${slug(block.heading)}.ts`
  const inlined = block.preludes.map((preludeName) => {
    const source = preludeSources[preludeName]
    if (source === undefined) {
      throw new ReadmeBlockError(
        block.line,
        `unknown prelude "${preludeName}" (known: ${Object.keys(preludeSources).join(", ")})`
      )
    }
    return splitImports(source, (specifier, offset) =>
      checkSpecifier(allowed, specifier, block.line, `prelude "${preludeName}", line ${offset + 1}`)
    )
  })
  const own = splitImports(block.code, (specifier, offset) =>
    checkSpecifier(allowed, specifier, block.line + 1 + offset, "")
  )
  checkPlaceholders(block.code, block.line + 1)
  const imports = mergeImports([...inlined.flatMap((prelude) => prelude.imports), ...own.imports])
  const head = [
    `// ${name}: generated from a markdown block by test/readme/blocks.ts`,
    ...imports,
    ...inlined.flatMap((prelude, i) => [`// prelude: ${block.preludes[i]}`, ...trimLines(prelude.body)]),
    `// the block (markdown line ${block.line + 1})`
  ]
  const body = own.body
  return {
    name,
    source: [...head, ...body, "", "export {}", ""].join("\n"),
    markdownLine: block.line + 1,
    firstBlockLine: head.length + 1,
    blockLines: body.length,
    preludes: block.preludes
  }
}

interface FencedBlock {
  readonly language: string
  /** The 1-based line of the opening fence. */
  readonly line: number
  readonly code: string
  readonly heading: string
  readonly preludes: ReadonlyArray<string>
}

const preludeComment = /^\s*<!--\s*prelude:\s*([\w-]+(?:\s*,\s*[\w-]+)*)\s*-->\s*$/

const fencedBlocks = (markdown: string): ReadonlyArray<FencedBlock> => {
  const lines = markdown.split(/\r?\n/)
  const blocks: Array<FencedBlock> = []
  let heading = ""
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!
    const headingMatch = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    if (headingMatch !== null) {
      heading = headingMatch[1]!
      continue
    }
    const open = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)/.exec(line)
    if (open === null) continue
    const [, indent, fence, language] = open as unknown as [string, string, string, string]
    const code: Array<string> = []
    let j = i + 1
    for (; j < lines.length; j++) {
      const closing = lines[j]!.trim()
      if (closing.startsWith(fence[0]!.repeat(fence.length)) && /^(`+|~+)$/.test(closing)) break
      code.push(indent.length > 0 && lines[j]!.startsWith(indent) ? lines[j]!.slice(indent.length) : lines[j]!)
    }
    let k = i - 1
    while (k >= 0 && lines[k]!.trim() === "") k--
    const prelude = k >= 0 ? preludeComment.exec(lines[k]!) : null
    blocks.push({
      language: language.toLowerCase(),
      line: i + 1,
      code: code.join("\n"),
      heading,
      preludes: prelude === null ? [] : prelude[1]!.split(",").map((name) => name.trim())
    })
    i = j
  }
  return blocks
}

const slug = (heading: string): string => {
  const text = heading
    .toLowerCase()
    .replace(/[`*_[\]()]/g, "")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 48)
    .replace(/-+$/, "")
  return text === "" ? "block" : text
}

const trimLines = (lines: ReadonlyArray<string>): ReadonlyArray<string> =>
  lines
    .join("\n")
    .replace(/^\s*\n/, "")
    .replace(/\s+$/, "")
    .split("\n")

interface Import {
  readonly specifier: string
  readonly named: ReadonlyArray<string>
  readonly defaultName: string | undefined
  readonly namespace: string | undefined
  readonly typeOnly: boolean
}

// `import ... from "x"` at the start of a line, possibly over several lines (prettier puts long
// named imports one per line); no semicolons in this repository's style, but they are allowed.
const importStatement = /^import\s+(?:([^"';]*?)\s+from\s+)?(["'])([^"']+)\2;?[ \t]*$/gms

const splitImports = (
  code: string,
  check: (specifier: string, lineOffset: number) => void
): { readonly imports: ReadonlyArray<Import>; readonly body: ReadonlyArray<string> } => {
  const imports: Array<Import> = []
  const body = code.replace(importStatement, (statement, clause: string | undefined, _quote, specifier: string, at) => {
    check(specifier, code.slice(0, at as number).split("\n").length - 1)
    imports.push(parseClause(specifier, clause ?? ""))
    // Blank lines in place of the statement, so that the block's lines keep their offsets.
    return "\n".repeat(statement.split("\n").length - 1)
  })
  return { imports, body: body.split("\n") }
}

const parseClause = (specifier: string, rawClause: string): Import => {
  let clause = rawClause.trim()
  const typeOnly = /^type\s/.test(clause) && !/^type\s*,/.test(clause)
  if (typeOnly) clause = clause.replace(/^type\s+/, "")
  const braces = /\{([\s\S]*)\}/.exec(clause)
  const named = braces === null ? [] : braces[1]!.split(",").map((spec) => spec.trim().replace(/\s+/g, " "))
  const rest = clause
    .replace(/\{[\s\S]*\}/, "")
    .split(",")
    .map((part) => part.trim())
    .filter((part) => part !== "")
  const namespace = rest.find((part) => part.startsWith("*"))?.replace(/^\*\s*as\s+/, "")
  const defaultName = rest.find((part) => !part.startsWith("*"))
  return {
    specifier,
    named: named
      .filter((spec) => spec !== "")
      .map((spec) => (typeOnly && !spec.startsWith("type ") ? `type ${spec}` : spec)),
    defaultName,
    namespace,
    typeOnly
  }
}

const mergeImports = (imports: ReadonlyArray<Import>): ReadonlyArray<string> => {
  const bySpecifier = new Map<
    string,
    { named: Set<string>; defaults: Set<string>; namespaces: Set<string>; bare: boolean; typeDefault: boolean }
  >()
  for (const entry of imports) {
    const merged = bySpecifier.get(entry.specifier) ?? {
      named: new Set<string>(),
      defaults: new Set<string>(),
      namespaces: new Set<string>(),
      bare: false,
      typeDefault: false
    }
    bySpecifier.set(entry.specifier, merged)
    for (const spec of entry.named) merged.named.add(spec)
    if (entry.defaultName !== undefined) merged.defaults.add(entry.defaultName)
    if (entry.namespace !== undefined) merged.namespaces.add(entry.namespace)
    if (entry.named.length === 0 && entry.defaultName === undefined && entry.namespace === undefined) merged.bare = true
  }
  const statements: Array<string> = []
  for (const [specifier, { bare, defaults, named, namespaces }] of bySpecifier) {
    // `type X` is dropped where the value import `X` is there too.
    const specs = [...named].filter((spec) => !(spec.startsWith("type ") && named.has(spec.slice(5))))
    const quoted = JSON.stringify(specifier)
    for (const namespace of namespaces) statements.push(`import * as ${namespace} from ${quoted}`)
    const defaultName = [...defaults][0]
    for (const extra of [...defaults].slice(1)) statements.push(`import ${extra} from ${quoted}`)
    if (specs.length > 0 || defaultName !== undefined) {
      const parts = [
        ...(defaultName === undefined ? [] : [defaultName]),
        ...(specs.length === 0 ? [] : [`{ ${specs.join(", ")} }`])
      ]
      statements.push(`import ${parts.join(", ")} from ${quoted}`)
    } else if (bare && namespaces.size === 0) {
      statements.push(`import ${quoted}`)
    }
  }
  return statements
}

const checkSpecifier = (allowed: ReadonlySet<string>, specifier: string, line: number, where: string) => {
  if (allowed.has(specifier) || specifier.startsWith("node:")) return
  throw new ReadmeBlockError(
    line,
    `${where === "" ? "" : `${where}: `}import from "${specifier}" is not allowed; a block may import from ${[
      ...allowed
    ].join(", ")} and node:*`
  )
}

// A comment that stands for code the reader has to supply: an ellipsis (`// ...`, `/* ... */`), or
// a block comment that is all there is between brackets (`.pipe(/* Cache and Store as above */)`).
const ellipsis = /^(?:\.\.\.|…)|(?:\.\.\.|…)$|^etc\.?$/
const lonelyComment = /[([{]\s*\/\*[\s\S]*?\*\/\s*[)\]}]/

const checkPlaceholders = (code: string, firstLine: number) => {
  const lines = code.split("\n")
  lines.forEach((line, offset) => {
    const lonely = lonelyComment.exec(line)
    if (lonely !== null) {
      throw new ReadmeBlockError(firstLine + offset, `placeholder "${lonely[0]}": write the code out`)
    }
    // Comments only: a `//` or `/* */` after an even number of quotes is close enough for documentation code.
    for (const match of line.matchAll(/\/\/(.*)$|\/\*(.*?)\*\//g)) {
      const before = line.slice(0, match.index)
      if ((before.match(/["'`]/g) ?? []).length % 2 === 1) continue
      const text = (match[1] ?? match[2] ?? "").trim()
      if (ellipsis.test(text)) {
        throw new ReadmeBlockError(firstLine + offset, `placeholder comment "${text}": write the code out`)
      }
    }
  })
}
