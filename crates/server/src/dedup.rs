//! The `messageId` dedup window: in memory for speed, persisted beside the WAL
//! so that a client retrying after a restart (its first attempt committed, its
//! acknowledgement lost) does not store the event twice.
//!
//! Each commit writes the ids it committed to `dedup/<name>.ids`
//! (`time: i64 LE`, then `u64 LE` hashes); at start-up the files still inside
//! the window are loaded, older ones deleted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// A set of 64-bit id hashes: open addressing with linear probing over one
/// array allocated for the window's bound up front. The keys are already xxh3
/// hashes, so their low bits are the slot. Compared with a general hash set,
/// an insert touches one cache line instead of two, and the table never
/// rehashes (which, under the WAL lock, stalled every request for the
/// milliseconds it took). Occupancy stays under one half.
struct IdTable {
    /// 0 is an empty slot; a hash of 0 is stored as 1.
    slots: Vec<u64>,
    mask: usize,
}

impl IdTable {
    fn new(max: usize) -> Self {
        // Zeroed memory comes from the OS untouched: pages count towards the
        // resident size only once ids land in them.
        let n = (max.saturating_add(1).max(8) * 2).next_power_of_two();
        Self {
            slots: vec![0; n],
            mask: n - 1,
        }
    }

    fn find(&self, h: u64) -> Result<usize, usize> {
        let mut i = h as usize & self.mask;
        loop {
            match self.slots[i] {
                0 => return Err(i),
                s if s == h => return Ok(i),
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    /// False if `h` is already there.
    fn insert(&mut self, h: u64) -> bool {
        let h = h.max(1);
        match self.find(h) {
            Ok(_) => false,
            Err(i) => {
                self.slots[i] = h;
                true
            }
        }
    }

    fn remove(&mut self, h: u64) {
        let Ok(mut hole) = self.find(h.max(1)) else {
            return;
        };
        // Backward-shift deletion: move later entries of the probe run into
        // the hole when their home slot allows, so no tombstones are needed.
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let home = s as usize & self.mask;
            // Can `s` move back to `hole`? Only if its home is not in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = 0;
    }
}

/// Recently seen `messageId` hashes, bounded by age and count.
pub(crate) struct Dedup {
    set: IdTable,
    order: VecDeque<(i64, u64)>,
    window_secs: i64,
    max: usize,
}

impl Dedup {
    pub(crate) fn new(window_secs: i64, max: usize) -> Self {
        Self {
            set: IdTable::new(max),
            order: VecDeque::new(),
            window_secs,
            max,
        }
    }

    /// Loads the home slots of `hashes` into the cache ahead of inserting them:
    /// the loads are independent, so their cache misses overlap instead of
    /// coming one after the other inside the insert loop (the table is tens of
    /// MiB; the misses were most of the time a request spent under the WAL lock).
    pub(crate) fn warm(&self, hashes: impl Iterator<Item = u64>) {
        let t = &self.set;
        let x = hashes.fold(0u64, |acc, h| acc ^ t.slots[h as usize & t.mask]);
        std::hint::black_box(x);
    }

    /// Records `h` seen at `now` (seconds); false if it was seen within the window.
    pub(crate) fn insert_if_new(&mut self, h: u64, now: i64) -> bool {
        self.evict(now);
        if !self.set.insert(h) {
            return false;
        }
        self.order.push_back((now, h));
        true
    }

    /// Forgets `h` (its event could not be written, so a retry must be taken).
    /// Its place in the age queue stays; evicting it later is harmless.
    pub(crate) fn forget(&mut self, h: u64) {
        self.set.remove(h);
    }

    fn evict(&mut self, now: i64) {
        while let Some(&(t, h)) = self.order.front() {
            if t < now - self.window_secs || self.order.len() >= self.max {
                self.order.pop_front();
                self.set.remove(h);
            } else {
                break;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.slots.iter().filter(|&&s| s != 0).count()
    }
}

/// The persisted id files, oldest first.
pub(crate) struct DedupFiles {
    dir: PathBuf,
    files: VecDeque<(PathBuf, i64, usize)>,
    window_secs: i64,
    max: usize,
}

impl DedupFiles {
    /// Opens the directory and loads every id still inside the window into `into`.
    pub(crate) fn load(
        dir: PathBuf,
        window_secs: i64,
        max: usize,
        now: i64,
        into: &mut Dedup,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(&dir)? {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "ids") {
                continue;
            }
            let data = std::fs::read(&path)?;
            if data.len() < 8 {
                std::fs::remove_file(&path)?;
                continue;
            }
            let t = i64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
            found.push((t, path, data));
        }
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut me = Self {
            dir,
            files: VecDeque::new(),
            window_secs,
            max,
        };
        for (t, path, data) in found {
            if t < now - window_secs {
                std::fs::remove_file(&path)?;
                continue;
            }
            let ids: Vec<u64> = data[8..]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            for &h in &ids {
                into.insert_if_new(h, t);
            }
            me.files.push_back((path, t, ids.len()));
        }
        me.prune(now)?;
        Ok(me)
    }

    /// Persists the ids of one commit (write, fsync, rename), then drops files
    /// that fell out of the window or beyond the count bound.
    pub(crate) fn record(&mut self, name: &str, ids: &[u64], now: i64) -> std::io::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut data = Vec::with_capacity(8 + ids.len() * 8);
        data.extend_from_slice(&now.to_le_bytes());
        for h in ids {
            data.extend_from_slice(&h.to_le_bytes());
        }
        let path = self.dir.join(format!("{name}.ids"));
        let tmp = path.with_extension("tmp");
        write_synced(&tmp, &data)?;
        std::fs::rename(&tmp, &path)?;
        crate::wal::segment::sync_dir(&self.dir)?;
        self.files.push_back((path, now, ids.len()));
        self.prune(now)
    }

    fn prune(&mut self, now: i64) -> std::io::Result<()> {
        let mut total: usize = self.files.iter().map(|f| f.2).sum();
        while let Some((path, t, n)) = self.files.front() {
            if *t < now - self.window_secs || total > self.max {
                total -= n;
                std::fs::remove_file(path).or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })?;
                self.files.pop_front();
            } else {
                break;
            }
        }
        Ok(())
    }
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_by_age_and_count() {
        let mut d = Dedup::new(10, 3);
        assert!(d.insert_if_new(1, 0));
        assert!(!d.insert_if_new(1, 5));
        assert!(d.insert_if_new(2, 5));
        assert!(d.insert_if_new(3, 6));
        // 1 is older than the window now.
        assert!(d.insert_if_new(1, 11));
        assert!(d.insert_if_new(4, 11));
        assert!(d.insert_if_new(5, 11));
        // count bound: 2 and 3 were pushed out
        assert!(d.len() <= 4);
        assert!(d.insert_if_new(2, 12));
        d.forget(2);
        assert!(d.insert_if_new(2, 12));
    }

    /// The table against std's HashSet, with a small table so that probe runs
    /// wrap around its end and deletions shift entries back across it.
    #[test]
    fn id_table_matches_a_hash_set() {
        let mut t = IdTable::new(20);
        let mut oracle = std::collections::HashSet::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct keys, all homed on the last three slots of 64 (runs
            // wrap to the front), and now and then 0 and 1 (stored alike).
            let h = match x % 50 {
                0 => 0,
                1 => 1,
                _ => (x % 24) * 0x40 + 61 + (x >> 60) % 3,
            };
            if oracle.len() < 20 && !x.is_multiple_of(3) {
                assert_eq!(t.insert(h), oracle.insert(h.max(1)), "step {step}");
            } else {
                t.remove(h);
                oracle.remove(&h.max(1));
            }
            let keys = (0..24).flat_map(|a| (0..3).map(move |b| a * 0x40 + 61 + b));
            for k in keys.chain([0, 1]) {
                assert_eq!(
                    t.find(k.max(1)).is_ok(),
                    oracle.contains(&k.max(1)),
                    "step {step} key {k}"
                );
            }
        }
    }

    #[test]
    fn persisted_ids_survive_a_restart_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Dedup::new(100, 1000);
        let mut files = DedupFiles::load(dir.path().into(), 100, 1000, 1000, &mut d).unwrap();
        files.record("a", &[11, 12], 1000).unwrap();
        files.record("b", &[13], 1050).unwrap();
        let mut d2 = Dedup::new(100, 1000);
        DedupFiles::load(dir.path().into(), 100, 1000, 1080, &mut d2).unwrap();
        assert!(!d2.insert_if_new(11, 1080));
        assert!(!d2.insert_if_new(13, 1080));
        // Later, file "a" is out of the window and deleted.
        let mut d3 = Dedup::new(100, 1000);
        DedupFiles::load(dir.path().into(), 100, 1000, 1120, &mut d3).unwrap();
        assert!(d3.insert_if_new(11, 1120));
        assert!(!d3.insert_if_new(13, 1120));
        assert!(!dir.path().join("a.ids").exists());
    }
}
