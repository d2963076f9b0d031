/**
 * Fault injection for tests: `import { FaultyCache, FaultyStore, InjectedFault } from "effect-write-through/testing"`.
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

/**
 * The cause of every failure the injectors inject: `error.cause instanceof InjectedFault`.
 *
 * @since 0.2.0
 */
export { InjectedFault } from "./internal/faultPlan.js"
