import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The suites share one Postgres and one Redis; files run in parallel on unique tables and key prefixes.
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
