//! The `event_id`s met in one commit, as 128-bit hashes: an open-addressing set
//! with linear probing, 16 bytes per slot, at most 3/4 full.
//!
//! With millions of ids every probe misses the cache (and the TLB). Callers
//! [`SeenIds::touch`] the slots of a block of ids in a tight loop first: those
//! loads do not depend on each other, so the CPU overlaps their misses, and the
//! inserts that follow find the lines in the cache.

/// A set of 128-bit hashes.
#[derive(Debug, Default)]
pub(crate) struct SeenIds {
    /// 0 marks an empty slot; the hash 0 itself is kept in `zero`.
    slots: Vec<u128>,
    len: usize,
    zero: bool,
}

impl SeenIds {
    fn slot(&self, h: u128) -> usize {
        // xxh3 bits are uniform: the low ones index the table.
        (h as usize) & (self.slots.len() - 1)
    }

    /// Makes room for `additional` more ids without growing.
    pub fn reserve(&mut self, additional: usize) {
        let need = self.len + additional;
        if need * 4 > self.slots.len() * 3 {
            self.grow_to((need * 4 / 3 + 1).next_power_of_two().max(16));
        }
    }

    fn grow_to(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0; capacity]);
        for h in old.into_iter().filter(|&h| h != 0) {
            let mut i = self.slot(h);
            while self.slots[i] != 0 {
                i = (i + 1) & (self.slots.len() - 1);
            }
            self.slots[i] = h;
        }
    }

    /// Loads the slot `h` will probe first and returns its content, so that a
    /// later [`Self::insert`] of `h` hits the cache. Fold the result into
    /// something the caller keeps (`std::hint::black_box`), or the load goes.
    pub fn touch(&self, h: u128) -> u128 {
        if self.slots.is_empty() {
            return 0;
        }
        self.slots[self.slot(h)]
    }

    /// Adds `h`; false if it was there already.
    pub fn insert(&mut self, h: u128) -> bool {
        if h == 0 {
            return !std::mem::replace(&mut self.zero, true);
        }
        self.reserve(1);
        let mask = self.slots.len() - 1;
        let mut i = self.slot(h);
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = h;
                    self.len += 1;
                    return true;
                }
                s if s == h => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn behaves_like_a_hash_set(ids in prop::collection::vec(prop_oneof![0u128..40, any::<u128>()], 0..600), reserve in 0usize..100) {
            let mut s = SeenIds::default();
            s.reserve(reserve);
            let mut reference = std::collections::HashSet::new();
            for (i, &h) in ids.iter().enumerate() {
                std::hint::black_box(s.touch(ids[(i + 3) % ids.len()]));
                prop_assert_eq!(s.insert(h), reference.insert(h));
            }
            prop_assert_eq!(s.len + usize::from(s.zero), reference.len());
        }
    }
}
