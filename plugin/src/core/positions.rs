//! Finding an item of a list by its key in constant time: the one hash table of the filter's
//! own code.
//!
//! std's `HashMap` and `HashSet` are generic: each key and value type was its own copy of
//! hashbrown in the .wasm (with std's table code, about 8 KB for the filter's six maps,
//! docs/module-size.md). This table holds only positions in the caller's list and asks the
//! caller whether a position holds the key it looks for, so one copy serves every use. Keys are
//! hashed as `HashMap` hashed them, with std's `RandomState` (SipHash under random keys): text
//! crafted to collide cannot make a lookup slow.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

pub struct Positions {
    state: RandomState,
    /// Open addressing, linear probing: (hash, position + 1), 0 for an empty slot. Never more
    /// than half full.
    slots: Vec<(u64, usize)>,
    len: usize,
}

impl Default for Positions {
    fn default() -> Self {
        Positions {
            state: RandomState::new(),
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl Positions {
    /// Room for `n` positions without growing.
    pub fn with_capacity(n: usize) -> Self {
        let mut p = Positions::default();
        p.slots
            .resize(n.saturating_mul(2).max(8).next_power_of_two(), (0, 0));
        p
    }

    /// The hash of a key made of `parts` (each part's length is hashed too: ("ab", "c") and
    /// ("a", "bc") differ).
    pub fn hash(&self, parts: &[&[u8]]) -> u64 {
        let mut h = self.state.build_hasher();
        for p in parts {
            h.write_usize(p.len());
            h.write(p);
        }
        h.finish()
    }

    /// The first position added under `hash` that `is_key` accepts.
    pub fn find(&self, hash: u64, is_key: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = (hash as usize) & mask;
        loop {
            let &(h, pos) = self.slots.get(i)?;
            if pos == 0 {
                return None;
            }
            if h == hash && is_key(pos.wrapping_sub(1)) {
                return Some(pos.wrapping_sub(1));
            }
            i = i.wrapping_add(1) & mask;
        }
    }

    /// Adds `pos` under `hash`.
    pub fn add(&mut self, hash: u64, pos: usize) {
        if self.len.saturating_add(1).saturating_mul(2) > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            self.slots
                .resize(old.len().saturating_mul(2).max(8), (0, 0));
            for &(h, p) in old.iter().filter(|(_, p)| *p != 0) {
                self.place(h, p);
            }
        }
        self.place(hash, pos.saturating_add(1));
        self.len = self.len.saturating_add(1);
    }

    fn place(&mut self, hash: u64, stored: usize) {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = (hash as usize) & mask;
        // Under half full: an empty slot is always found.
        while let Some(slot) = self.slots.get_mut(i) {
            if slot.1 == 0 {
                *slot = (hash, stored);
                return;
            }
            i = i.wrapping_add(1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(p: &Positions, list: &[String], key: &str) -> Option<usize> {
        let h = p.hash(&[key.as_bytes()]);
        p.find(h, &mut |i| list[i] == key)
    }

    #[test]
    fn finds_what_was_added_and_nothing_else() {
        for start in [0, 3, 5000] {
            let mut p = Positions::with_capacity(start);
            let list: Vec<String> = (0..5000)
                .map(|i| format!("10.0.{}.{}:80", i / 256, i % 256))
                .collect();
            for (i, s) in list.iter().enumerate() {
                assert_eq!(find(&p, &list, s), None);
                p.add(p.hash(&[s.as_bytes()]), i);
            }
            for (i, s) in list.iter().enumerate() {
                assert_eq!(find(&p, &list, s), Some(i));
            }
            assert_eq!(find(&p, &list, "10.0.0.0:81"), None);
        }
    }

    #[test]
    fn parts_are_delimited() {
        let p = Positions::default();
        assert_ne!(p.hash(&[b"ab", b"c"]), p.hash(&[b"a", b"bc"]));
        assert_eq!(p.hash(&[b"ab", b"c"]), p.hash(&[b"ab", b"c"]));
    }

    #[test]
    fn the_first_added_of_equal_keys_is_found() {
        let list = vec!["a".to_string(), "a".to_string()];
        let mut p = Positions::default();
        for (i, s) in list.iter().enumerate() {
            p.add(p.hash(&[s.as_bytes()]), i);
        }
        assert_eq!(find(&p, &list, "a"), Some(0));
    }
}
