//! The `event_id`s met in one commit, as 128-bit hashes, in bounded memory.
//!
//! The newest ids live in an open-addressing table (linear probing, 16 bytes a
//! slot, at most 3/4 full). When it holds `limit` ids it is spilled: its ids
//! go, grouped by home slot, to an anonymous temporary file (a *run*), and the
//! table starts empty again. In memory a run keeps only a split-block Bloom
//! filter (2 bytes an id) and where each group starts in the file (4 bytes a
//! group of ~192 ids). An id the table does not hold is looked up in a run only
//! when that run's filter says it may be there: one read of one group.
//!
//! With millions of ids every probe misses the cache (and the TLB). Callers
//! [`SeenIds::touch`] the slots (and filter blocks) of a block of ids in a tight
//! loop first: those loads do not depend on each other, so the CPU overlaps
//! their misses, and the inserts that follow find the lines in the cache.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

/// Default `limit`: 3 Mi ids, a table of 4 Mi slots (64 MiB).
pub(crate) const DEFAULT_LIMIT: usize = 3 << 20;

/// Slots of the table per group in a spilled run.
const GROUP_SLOTS: usize = 256;

/// A set of 128-bit hashes that spills to disk.
#[derive(Debug)]
pub(crate) struct SeenIds {
    table: Table,
    /// Most ids held in the table before it is spilled.
    limit: usize,
    runs: Vec<Run>,
    /// Where runs go (None: the system's temporary directory).
    dir: Option<std::path::PathBuf>,
    /// A spill failed: the set is no longer exact, every insert fails.
    broken: bool,
}

impl Default for SeenIds {
    fn default() -> Self {
        Self::with_limit(DEFAULT_LIMIT)
    }
}

impl SeenIds {
    /// A set that keeps at most `limit` ids in memory (at least 16).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            table: Table::default(),
            limit: limit.max(16),
            runs: Vec::new(),
            dir: None,
            broken: false,
        }
    }

    /// Makes room for `additional` more ids without growing, up to the limit.
    pub fn reserve(&mut self, additional: usize) {
        let need = (self.table.len + additional).min(self.limit);
        self.table.reserve_total(need);
    }

    /// Loads what inserting `h` will read first (its table slot, its block in
    /// each run's filter) and returns a mix of it, so that a later
    /// [`Self::insert`] of `h` hits the cache. Fold the result into something
    /// the caller keeps (`std::hint::black_box`), or the loads go.
    pub fn touch(&self, h: u128) -> u128 {
        let mut mix = self.table.touch(h);
        for run in &self.runs {
            mix ^= u128::from(run.filter.touch(h));
        }
        mix
    }

    /// Adds `h`; false if it was there already. Fails only when a spilled run
    /// cannot be written or read back.
    pub fn insert(&mut self, h: u128) -> std::io::Result<bool> {
        if self.broken {
            return Err(std::io::Error::other(
                "event ids could not be spilled earlier in this run",
            ));
        }
        if self.table.contains(h) {
            return Ok(false);
        }
        for run in &self.runs {
            if run.contains(h)? {
                return Ok(false);
            }
        }
        if self.table.len >= self.limit {
            self.spill()?;
        }
        self.table.reserve_total(self.table.len + 1);
        self.table.insert_new(h);
        Ok(true)
    }

    /// Ids held, in memory and spilled.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len
            + self
                .runs
                .iter()
                .map(|r| r.starts.last().map_or(0, |&n| n as usize) + usize::from(r.zero))
                .sum::<usize>()
    }

    /// Writes the table out as a run and empties it (keeping its slots). A
    /// failure leaves the table empty too (it was drained) and the set broken.
    fn spill(&mut self) -> std::io::Result<()> {
        let file = match &self.dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        };
        match file.and_then(|file| Run::write(&mut self.table, file)) {
            Ok(run) => {
                self.runs.push(run);
                Ok(())
            }
            Err(e) => {
                self.table.clear();
                self.broken = true;
                Err(e)
            }
        }
    }
}

/// The home slot of `h` in a table of `mask + 1` slots, counted from `origin`.
fn circular(h: u128, origin: usize, mask: usize) -> usize {
    (h as usize).wrapping_sub(origin) & mask
}

/// The in-memory table. 0 marks an empty slot; the hash 0 itself is `zero`.
#[derive(Debug, Default)]
struct Table {
    slots: Vec<u128>,
    len: usize,
    zero: bool,
}

impl Table {
    fn home(&self, h: u128) -> usize {
        // xxh3 bits are uniform: the low ones index the table.
        (h as usize) & (self.slots.len() - 1)
    }

    fn reserve_total(&mut self, need: usize) {
        if need * 4 > self.slots.len() * 3 {
            let mut capacity = self.slots.len().max(16);
            while need * 4 > capacity * 3 {
                capacity *= 2;
            }
            self.grow_to(capacity);
        }
    }

    fn grow_to(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0; capacity]);
        for h in old.into_iter().filter(|&h| h != 0) {
            self.place(h);
        }
    }

    fn place(&mut self, h: u128) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(h);
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = h;
    }

    fn touch(&self, h: u128) -> u128 {
        if self.slots.is_empty() {
            return 0;
        }
        self.slots[self.home(h)]
    }

    fn contains(&self, h: u128) -> bool {
        if h == 0 {
            return self.zero;
        }
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(h);
        loop {
            match self.slots[i] {
                0 => return false,
                s if s == h => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Adds `h`, known to be absent, with room reserved.
    fn insert_new(&mut self, h: u128) {
        if h == 0 {
            self.zero = true;
        } else {
            self.place(h);
        }
        self.len += 1;
    }

    /// Moves the ids to the front of `slots`, ordered by [`circular`] home
    /// from `origin`, and returns `(n, origin)`: how many ids there are
    /// (`zero` not included) and where the order starts. The table is left
    /// unusable until [`Self::clear`].
    fn drain_by_home(&mut self) -> (usize, usize) {
        let cap = self.slots.len();
        if cap == 0 {
            return (0, 0);
        }
        let mask = cap - 1;
        // No probe sequence runs over an empty slot, so from the slot after
        // one, every id comes after its home (circularly) and before the next
        // empty slot: the ids are sorted by home counted from there, except
        // for the order inside a cluster.
        let Some(empty) = self.slots.iter().position(|&h| h == 0) else {
            unreachable!("the table is never full")
        };
        let origin = (empty + 1) & mask;
        self.slots.rotate_left(origin);
        let mut n = 0;
        for i in 0..cap {
            let h = self.slots[i];
            if h != 0 {
                self.slots[n] = h;
                n += 1;
            }
        }
        // Insertion sort: each id moves only within its cluster.
        let key = |h: u128| circular(h, origin, mask);
        for i in 1..n {
            let h = self.slots[i];
            let k = key(h);
            let mut j = i;
            while j > 0 && key(self.slots[j - 1]) > k {
                self.slots[j] = self.slots[j - 1];
                j -= 1;
            }
            self.slots[j] = h;
        }
        (n, origin)
    }

    fn clear(&mut self) {
        self.slots.fill(0);
        self.len = 0;
        self.zero = false;
    }
}

/// A spilled table: ids on disk grouped by their home slot's group, a filter
/// and the group starts in memory.
#[derive(Debug)]
struct Run {
    file: File,
    /// `starts[g]..starts[g + 1]`: the ids (by index in the file) of group `g`.
    starts: Vec<u32>,
    /// The group of `h` is `circular(h, origin, mask) / GROUP_SLOTS`, as in
    /// the table this run came from.
    origin: usize,
    mask: usize,
    filter: Filter,
    zero: bool,
}

impl Run {
    fn write(table: &mut Table, file: File) -> std::io::Result<Self> {
        let zero = table.zero;
        let mask = table.slots.len().max(1) - 1;
        let (n, origin) = table.drain_by_home();
        let ids = &table.slots[..n];
        let groups = (mask + 1).div_ceil(GROUP_SLOTS);
        let mut starts = Vec::with_capacity(groups + 1);
        let mut filter = Filter::new(n);
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        let mut g = 0;
        for (i, &h) in ids.iter().enumerate() {
            let home_group = circular(h, origin, mask) / GROUP_SLOTS;
            while g <= home_group {
                starts.push(i as u32);
                g += 1;
            }
            filter.insert(h);
            out.write_all(&h.to_le_bytes())?;
        }
        while g <= groups {
            starts.push(n as u32);
            g += 1;
        }
        out.flush()?;
        drop(out);
        table.clear();
        Ok(Self {
            file,
            starts,
            origin,
            mask,
            filter,
            zero,
        })
    }

    fn contains(&self, h: u128) -> std::io::Result<bool> {
        if h == 0 {
            return Ok(self.zero);
        }
        if !self.filter.may_contain(h) {
            return Ok(false);
        }
        let g = circular(h, self.origin, self.mask) / GROUP_SLOTS;
        let (from, to) = (self.starts[g] as usize, self.starts[g + 1] as usize);
        let mut buf = vec![0u8; (to - from) * 16];
        self.file.read_exact_at(&mut buf, from as u64 * 16)?;
        Ok(buf
            .chunks_exact(16)
            .any(|b| u128::from_le_bytes(b.try_into().expect("16 bytes")) == h))
    }
}

/// A split-block Bloom filter (as Parquet's): 256-bit blocks, one bit set in
/// each of a block's eight words.
#[derive(Debug)]
struct Filter {
    blocks: Vec<Block>,
}

/// One block, on one cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(32))]
struct Block([u32; 8]);

const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

impl Filter {
    /// A filter for `n` ids: 16 bits an id.
    fn new(n: usize) -> Self {
        Self {
            blocks: vec![Block::default(); n.div_ceil(16).max(1)],
        }
    }

    fn block(&self, h: u128) -> usize {
        // The high 64 bits choose the block, the table uses the low ones.
        ((((h >> 64) as u64 >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    fn masks(h: u128) -> [u32; 8] {
        let key = (h >> 64) as u32;
        SALT.map(|s| 1 << (key.wrapping_mul(s) >> 27))
    }

    fn insert(&mut self, h: u128) {
        let b = self.block(h);
        for (w, m) in self.blocks[b].0.iter_mut().zip(Self::masks(h)) {
            *w |= m;
        }
    }

    fn may_contain(&self, h: u128) -> bool {
        let block = &self.blocks[self.block(h)];
        block.0.iter().zip(Self::masks(h)).all(|(w, m)| w & m != 0)
    }

    fn touch(&self, h: u128) -> u32 {
        self.blocks[self.block(h)].0[0]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ids() -> impl Strategy<Value = Vec<u128>> {
        // Small values collide often (and 0 is the empty-slot marker); small
        // values times a large odd number spread over the table and the
        // filter's blocks.
        prop::collection::vec(
            prop_oneof![
                0u128..40,
                (0u128..300)
                    .prop_map(|v| v.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
                any::<u128>()
            ],
            0..1500,
        )
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_set(ids in ids(), reserve in 0usize..100, limit in prop_oneof![Just(usize::MAX), 16usize..200]) {
            let mut s = SeenIds::with_limit(limit);
            s.reserve(reserve);
            let mut reference = std::collections::HashSet::new();
            for (i, &h) in ids.iter().enumerate() {
                std::hint::black_box(s.touch(ids[(i + 3) % ids.len()]));
                prop_assert_eq!(s.insert(h).unwrap(), reference.insert(h));
                prop_assert!(s.table.len <= s.limit);
            }
            prop_assert_eq!(s.len(), reference.len());
        }
    }

    #[test]
    fn spills_keep_every_id_and_memory_stays_bounded() {
        // 200,000 ids through a table of at most 10,000: 19 runs. Every id is
        // found again, none is invented, and the table never grows past the
        // limit.
        let mut s = SeenIds::with_limit(10_000);
        let id = |i: u64| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes());
        for i in 0..200_000 {
            assert!(s.insert(id(i)).unwrap(), "{i} is new");
        }
        assert_eq!(s.runs.len(), 19);
        assert_eq!(s.table.slots.len(), 16_384);
        for i in (0..200_000).step_by(7) {
            assert!(!s.insert(id(i)).unwrap(), "{i} was seen");
        }
        let mut fresh = 0;
        for i in 200_000..210_000 {
            fresh += usize::from(s.insert(id(i)).unwrap());
        }
        assert_eq!(fresh, 10_000);
    }

    #[test]
    fn a_failed_spill_fails_every_later_insert() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SeenIds::with_limit(16);
        s.dir = Some(dir.path().join("missing"));
        for i in 0..16u128 {
            assert!(s.insert(i + 1).unwrap());
        }
        assert!(s.insert(17).is_err(), "the spill cannot create its file");
        assert_eq!(s.table.len, 0);
        assert!(s.insert(18).is_err() && s.insert(1).is_err());
        // The same set spills fine where it can write.
        let mut s = SeenIds::with_limit(16);
        s.dir = Some(dir.path().to_path_buf());
        assert!((1..=40u128).all(|i| s.insert(i).unwrap()));
        assert_eq!(s.runs.len(), 2);
        assert!((1..=40u128).all(|i| !s.insert(i).unwrap()));
    }

    #[test]
    fn a_drained_table_is_ordered_by_home_slot() {
        let mut t = Table::default();
        let mut reference = Vec::new();
        for i in 1..=700u64 {
            let h = xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes());
            t.reserve_total(t.len + 1);
            t.insert_new(h);
            reference.push(h);
        }
        let mask = t.slots.len() - 1;
        let (n, origin) = t.drain_by_home();
        assert_eq!(n, 700);
        let drained = t.slots[..n].to_vec();
        let key = |h| circular(h, origin, mask);
        assert!(drained.windows(2).all(|w| key(w[0]) <= key(w[1])));
        let mut a = drained;
        a.sort_unstable();
        reference.sort_unstable();
        assert_eq!(a, reference);
    }

    #[test]
    fn the_filter_has_few_false_positives() {
        let id = |i: u64| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes());
        let mut f = Filter::new(100_000);
        for i in 0..100_000 {
            f.insert(id(i));
        }
        assert!((0..100_000).all(|i| f.may_contain(id(i))));
        let false_positives = (100_000..1_100_000)
            .filter(|&i| f.may_contain(id(i)))
            .count();
        // 16 bits an id: about 0.1%; allow 0.3%.
        assert!(false_positives < 3_000, "{false_positives} in 1,000,000");
    }
}
