//! The simulated KV prefix cache: blocks of `block_size` tokens keyed by the
//! hash chain of the whole prefix, LRU eviction at a token capacity, hits
//! counted in whole blocks as vLLM's automatic prefix caching does.

use std::collections::{BTreeMap, HashMap};

use crate::text::prompt::mix;

/// The hash chain of every *full* block of `ids`.
pub fn block_hashes(ids: &[u32], block_size: usize) -> Vec<u64> {
    let mut h: u64 = 0x6b76_6361_6368_6521;
    ids.chunks_exact(block_size)
        .map(|block| {
            for &id in block {
                h = mix(h.rotate_left(7) ^ id as u64);
            }
            h
        })
        .collect()
}

/// An LRU set of block hashes.
pub struct PrefixCache {
    block_size: usize,
    capacity_blocks: usize,
    stamp_of: HashMap<u64, u64>,
    by_stamp: BTreeMap<u64, u64>,
    clock: u64,
}

impl PrefixCache {
    /// A cache of `capacity_tokens` tokens in blocks of `block_size`.
    pub fn new(block_size: usize, capacity_tokens: usize) -> PrefixCache {
        PrefixCache {
            block_size,
            capacity_blocks: capacity_tokens / block_size.max(1),
            stamp_of: HashMap::new(),
            by_stamp: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Forget every block (vLLM's `POST /reset_prefix_cache`).
    pub fn clear(&mut self) {
        self.stamp_of.clear();
        self.by_stamp.clear();
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    fn touch(&mut self, h: u64) {
        self.clock += 1;
        if let Some(old) = self.stamp_of.insert(h, self.clock) {
            self.by_stamp.remove(&old);
        }
        self.by_stamp.insert(self.clock, h);
    }

    /// Cached prompt tokens for a prompt of `prompt_len` tokens with these block
    /// hashes: the longest cached prefix in whole blocks, leaving at least one
    /// token to compute (a fully cached prompt still recomputes its last block).
    /// Touches the hit blocks.
    pub fn lookup(&mut self, hashes: &[u64], prompt_len: usize) -> usize {
        let hit = hashes
            .iter()
            .take_while(|h| self.stamp_of.contains_key(h))
            .count();
        for &h in &hashes[..hit] {
            self.touch(h);
        }
        let max_blocks = prompt_len.saturating_sub(1) / self.block_size;
        hit.min(max_blocks) * self.block_size
    }

    /// Insert (or refresh) blocks, evicting the least recently used beyond capacity.
    pub fn insert(&mut self, hashes: &[u64]) {
        for &h in hashes {
            self.touch(h);
        }
        while self.stamp_of.len() > self.capacity_blocks {
            let Some((_, h)) = self.by_stamp.pop_first() else {
                break;
            };
            self.stamp_of.remove(&h);
        }
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.stamp_of.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.stamp_of.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_whole_blocks_of_shared_prefix_and_evicts_lru() {
        let mut c = PrefixCache::new(4, 16);
        let a: Vec<u32> = (0..13).collect();
        let ha = block_hashes(&a, 4);
        assert_eq!(ha.len(), 3);
        assert_eq!(c.lookup(&ha, a.len()), 0);
        c.insert(&ha);
        let mut b = a.clone();
        b.extend([99, 98, 97]);
        let hb = block_hashes(&b, 4);
        assert_eq!(c.lookup(&hb, b.len()), 12);
        // Fully cached prompt: the last block is recomputed.
        assert_eq!(c.lookup(&ha[..2], 8), 4);
        // A different sequence of 4 blocks pushes the old ones out.
        let other: Vec<u32> = (100..116).collect();
        c.insert(&block_hashes(&other, 4));
        assert_eq!(c.len(), 4);
        assert_eq!(c.lookup(&hb, b.len()), 0);
    }
}
