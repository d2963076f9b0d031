import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The pack-and-consume test runs on its own, after these (vitest.package.config.ts).
    exclude: [...configDefaults.exclude, "test/package/**"],
    // The suites share one Postgres and one Redis; files run in parallel on unique tables and key prefixes.
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
