/**
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as Cache from "./Cache.js"

/**
 * @since 0.2.0
 */
export * as ChangeCapture from "./ChangeCapture.js"

/**
 * @since 0.2.0
 */
export * as CircuitBreaker from "./CircuitBreaker.js"

/**
 * @since 0.1.0
 */
export * as MemoryCache from "./MemoryCache.js"

/**
 * @since 0.1.0
 */
export * as MemoryStore from "./MemoryStore.js"

/**
 * @since 0.1.0
 */
export * as Metrics from "./Metrics.js"

/**
 * @since 0.1.0
 */
export * as RedisCache from "./RedisCache.js"

/**
 * @since 0.2.0
 */
export * as RedisClusterCache from "./RedisClusterCache.js"

/**
 * @since 0.1.0
 */
export * as SqlStore from "./SqlStore.js"

/**
 * @since 0.1.0
 */
export * as Store from "./Store.js"

/**
 * @since 0.1.0
 */
export * as WriteThrough from "./WriteThrough.js"

/**
 * @since 0.1.0
 */
export * as WriteThroughError from "./WriteThroughError.js"
