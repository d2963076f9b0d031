import { defineConfig } from "vitest/config"

// `npm test`'s second run: the packed package installed into a fresh project from the npm registry,
// type-checked and run there. Slow (a pack, an install, three compilations), so it runs alone.
export default defineConfig({
  test: {
    include: ["test/package/**/*.test.ts"],
    testTimeout: 300_000,
    hookTimeout: 600_000
  }
})
