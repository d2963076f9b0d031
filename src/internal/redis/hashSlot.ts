// Redis Cluster hash slots: which slot a key lands in, and a hash tag for each slot, so that a
// slot's memory marker can be named to land in that very slot.
import calculateSlot from "cluster-key-slot"

export const slotCount = 16384

export const slotOf = (key: string): number => calculateSlot(key)

/** True when a key starting with `prefix` has its slot fixed by the prefix's hash tag (`{...}`). */
export const prefixFixesSlot = (prefix: string): boolean => {
  const open = prefix.indexOf("{")
  return open >= 0 && prefix.indexOf("}", open + 1) > open + 1
}

let tags: Array<string> | undefined

/** A short string that hashes to `slot`: as `{tag}` in a key, it puts the key in that slot. */
export const tagOf = (slot: number): string => {
  if (tags === undefined) {
    // About 170,000 CRC16s of short strings, once: a few milliseconds.
    const found: Array<string | undefined> = new Array(slotCount)
    let remaining = slotCount
    for (let n = 0; remaining > 0; n++) {
      const candidate = n.toString(36)
      const at = calculateSlot(candidate)
      if (found[at] === undefined) {
        found[at] = candidate
        remaining--
      }
    }
    tags = found as Array<string>
  }
  return tags[slot]!
}
