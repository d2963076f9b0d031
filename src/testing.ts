/**
 * Fault injection for tests: `import { FaultyCache, FaultyStore } from "effect-write-through/testing"`.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as FaultyCache from "./FaultyCache.js"

/**
 * @since 0.1.0
 */
export * as FaultyStore from "./FaultyStore.js"
