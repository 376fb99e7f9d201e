//! Identity merges applied when folds read keys (the rules are in
//! `tenure_schema::identity`).
//!
//! A person whose users' rows are not all under one key yet (merges that
//! `tenure compact` has not folded into the files) is read under a *virtual*
//! key `users + i` (i = 0, 1, ... in order of the person's key): the scan
//! takes those rows out of the key ranges they were read in and delivers them
//! as one more range, after all the others: to a fold that asks for order,
//! each person's rows together and in time order; to the others, as they
//! were set aside, each piece in virtual key order (see `fold::scan`).
//! Every fold then sees one user per person without knowing about merges,
//! and its per-user arrays simply cover the virtual keys too
//! ([`Identity::key_space`]). Persons whose merges are all folded into the
//! files read as they are.
//!
//! A fold whose result does not depend on which key a user comes under
//! (counts and sums: [`crate::fold::FoldInput::any_key`]) reads a person
//! whose keys all fall in one key range in that range, under the person's
//! own key ([`Identity::targets`]): only persons across two ranges are set
//! aside, and a person's own key keeps its rows where they are. Each range
//! tests its rows' keys against a bit per key moved ([`Identity::moves`]):
//! only the rows of keys read under another key are touched.

use std::sync::Arc;

use tenure_schema::identity::{Merge, Persons, resolve};
use tenure_schema::{Snapshot, StoreLayout};

use crate::{EngineError, Result};

/// Keys read as another (virtual) key.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// Keys in the users dictionary; virtual keys start here.
    pub base: u32,
    /// Dictionary keys whose rows are a merged person's, ascending.
    member: Vec<u32>,
    /// The virtual key of each of `member`'s keys (same order).
    virt: Vec<u32>,
    /// Dictionary keys that joined another person (their rows, if any, are
    /// read under that person's key) or are read under a virtual key, so
    /// stand for no user of their own; ascending.
    absorbed: Vec<u32>,
    /// Per virtual key (from `base`), the person's key (its name's key).
    pub person: Vec<u32>,
}

impl Identity {
    /// The keys to divert for `log` (entries' merges, in order) over files
    /// folded through `folded` entries at least; `None` when nothing is.
    pub fn of_log(base: u32, log: &[Vec<Merge>], folded: usize) -> Option<Self> {
        let all: Vec<Merge> = log.iter().flatten().copied().collect();
        if all.is_empty() {
            return None;
        }
        let folded = folded.min(log.len());
        let mut full = resolve(&all);
        // Nothing folded into the files yet (the usual case between two
        // compactions): no second resolution.
        let mut before: Option<Persons> =
            (folded > 0).then(|| resolve(log[..folded].iter().flatten()));
        // Persons by key, each with its members: (person, key) ascending,
        // as one sortable word each.
        let mut members: Vec<u64> = full
            .members()
            .into_iter()
            .map(|(k, p)| (u64::from(p) << 32) | u64::from(k))
            .collect();
        members.sort_unstable();
        let mut out = Identity {
            base,
            ..Default::default()
        };
        // (member key, virtual key), sorted by member key at the end.
        let mut diverted: Vec<u64> = Vec::with_capacity(members.len());
        for group in members.chunk_by(|a, b| a >> 32 == b >> 32) {
            let person = (group[0] >> 32) as u32;
            let keys = group.iter().map(|&w| w as u32).filter(|&k| k < base);
            // Folded into the files: every row is under one key already.
            if let Some(before) = &mut before {
                let first = before.person(group[0] as u32);
                if group.iter().all(|&w| before.person(w as u32) == first) {
                    out.absorbed.extend(keys.filter(|&k| k != person));
                    continue;
                }
            }
            let v = base + out.person.len() as u32;
            out.person.push(person);
            for k in keys {
                out.absorbed.push(k);
                diverted.push((u64::from(k) << 32) | u64::from(v));
            }
        }
        diverted.sort_unstable();
        out.member = diverted.iter().map(|&w| (w >> 32) as u32).collect();
        out.virt = diverted.iter().map(|&w| w as u32).collect();
        out.absorbed.sort_unstable();
        Some(out)
    }

    /// Reads the identity log of `snapshot`. What is folded is judged over
    /// every committed file, not only those a time range reads, so stores
    /// opened over different ranges of one snapshot number virtual keys
    /// alike (analyses line per-user vectors up across them).
    ///
    /// Resolving the log is single-threaded work that grows with the merges
    /// (about 45 ms for 100K merged persons), so the result is kept in the
    /// store ([`StoreLayout::identity_persons`], named by the log's files and
    /// how many are folded): the first reader of a log resolves it and puts
    /// the result there, later ones read it in one GET. A cached object that
    /// is missing, unreadable or not for this log is resolved again; failing
    /// to put one (a read-only store) only costs the next reader the work.
    pub async fn load(
        store: &tenure_store::Store,
        snapshot: &Snapshot,
    ) -> Result<Option<Arc<Self>>> {
        if snapshot.identity.is_empty() {
            return Ok(None);
        }
        let folded = snapshot
            .files
            .iter()
            .map(|f| f.identity as usize)
            .min()
            .unwrap_or(snapshot.identity.len())
            .min(snapshot.identity.len());
        let base = u32::try_from(snapshot.users.count)
            .map_err(|_| EngineError::Unreadable("more than 4 billion users".into()))?;
        let cached = cache_path(snapshot, folded);
        let id = match read_cached(store, &cached, base).await {
            Some(id) => id,
            None => {
                let log = read_log(store, snapshot).await?;
                let id = Self::of_log(base, &log, folded).unwrap_or(Identity {
                    base,
                    ..Default::default()
                });
                keep(store, snapshot, folded, &cached, &id).await;
                id
            }
        };
        Ok((id.gone() > 0).then(|| Arc::new(id)))
    }

    /// The bytes [`Identity::decode`] reads back: a header, the lists as
    /// little-endian `u32`s (virtual keys counted from `base`, so the bytes
    /// do not change as the dictionary grows) and an xxh3 checksum.
    pub fn encode(&self) -> Vec<u8> {
        let lists: [&[u32]; 3] = [&self.member, &self.absorbed, &self.person];
        let mut out = Vec::with_capacity(
            24 + 4 * (2 * self.member.len() + self.absorbed.len() + self.person.len()) + 8,
        );
        out.extend_from_slice(PERSONS_MAGIC);
        for l in lists {
            out.extend_from_slice(&(l.len() as u32).to_le_bytes());
        }
        for &k in &self.member {
            out.extend_from_slice(&k.to_le_bytes());
        }
        for &v in &self.virt {
            out.extend_from_slice(&(v - self.base).to_le_bytes());
        }
        for l in &lists[1..] {
            for &k in *l {
                out.extend_from_slice(&k.to_le_bytes());
            }
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Reads [`Identity::encode`]'s bytes for a dictionary of `base` keys;
    /// an error says what is wrong with them.
    pub fn decode(base: u32, data: &[u8]) -> std::result::Result<Self, String> {
        let body_len = data
            .len()
            .checked_sub(8)
            .filter(|&n| n >= 20 && data.starts_with(PERSONS_MAGIC))
            .ok_or("not a persons file (bad header)")?;
        let (body, sum) = data.split_at(body_len);
        if xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() != sum {
            return Err("checksum mismatch".into());
        }
        let word = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().expect("4 bytes"));
        let (m, a, p) = (word(8) as usize, word(12) as usize, word(16) as usize);
        if body.len() != 20 + 4 * (2 * m + a + p) {
            return Err(format!(
                "{} bytes for {m} members, {a} absorbed, {p} persons",
                body.len()
            ));
        }
        let list = |at: usize, n: usize| -> Vec<u32> {
            body[at..at + 4 * n]
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
                .collect()
        };
        let member = list(20, m);
        let rel = list(20 + 4 * m, m);
        let absorbed = list(20 + 8 * m, a);
        let person = list(20 + 8 * m + 4 * a, p);
        let keys_ok =
            |l: &[u32]| l.is_sorted_by(|x, y| x < y) && l.last().is_none_or(|&k| k < base);
        if !keys_ok(&member) || !keys_ok(&absorbed) || person.iter().any(|&k| k >= base) {
            return Err(format!(
                "keys out of order or beyond the dictionary's {base}"
            ));
        }
        if rel.iter().any(|&v| v as usize >= p) || base.checked_add(p as u32).is_none() {
            return Err("a virtual key beyond the persons".into());
        }
        Ok(Identity {
            base,
            member,
            virt: rel.into_iter().map(|v| base + v).collect(),
            absorbed,
            person,
        })
    }

    /// Per diverted key (ascending), the key a reading by the key `ranges`
    /// (ascending, disjoint) may read its rows under: the person's own key
    /// when every key of the person is in one of the ranges (the person is
    /// then read whole by that range's reading, see
    /// [`crate::fold::FoldInput::any_key`]), else the person's virtual key.
    /// A person's own key is among its keys (its rows are the person's
    /// too), and it is no other user's.
    pub fn targets(&self, ranges: &[(u32, u32)]) -> Vec<u32> {
        debug_assert!(ranges.is_sorted());
        let n = self.person.len();
        let (mut lo, mut hi) = (vec![u32::MAX; n], vec![0u32; n]);
        let mut own = vec![false; n];
        for (&k, &v) in self.member.iter().zip(&self.virt) {
            let i = (v - self.base) as usize;
            lo[i] = lo[i].min(k);
            hi[i] = hi[i].max(k);
            own[i] |= k == self.person[i];
        }
        let local: Vec<bool> = (0..n)
            .map(|i| {
                let r = ranges.partition_point(|&(_, end)| end <= lo[i]);
                own[i] && ranges.get(r).is_some_and(|&(a, b)| a <= lo[i] && hi[i] < b)
            })
            .collect();
        self.virt
            .iter()
            .map(|&v| {
                let i = (v - self.base) as usize;
                if local[i] { self.person[i] } else { v }
            })
            .collect()
    }

    /// The keys of `range` (dictionary keys `lo..hi`) whose rows are read
    /// under another key, and that key: for a diverted key, its entry of
    /// `targets` ([`Self::targets`]; without, its person's virtual key),
    /// unless that is the key itself (a person read under its own key
    /// keeps its own rows where they are).
    pub fn moves(&self, (lo, hi): (u32, u32), targets: Option<&[u32]>) -> Moves {
        let a = self.member.partition_point(|&k| k < lo);
        let b = self.member.partition_point(|&k| k < hi);
        let (mut keys, mut to) = (Vec::new(), Vec::new());
        for r in a..b {
            let (k, t) = (self.member[r], targets.map_or(self.virt[r], |t| t[r]));
            if t != k {
                keys.push(k);
                to.push(t);
            }
        }
        Moves {
            bits: MemberBits::new(hi as usize, &keys),
            to,
        }
    }

    /// Dictionary keys that stand for no user of their own (see `absorbed`).
    pub fn gone(&self) -> usize {
        self.absorbed.len()
    }

    /// Whether dictionary key `k` stands for a user of its own (it did not
    /// join another person, and is not read under a virtual key). Virtual
    /// keys are users.
    #[inline]
    pub fn is_user(&self, k: u32) -> bool {
        self.absorbed.binary_search(&k).is_err()
    }

    /// Whether some persons are read under virtual keys.
    pub fn diverts(&self) -> bool {
        !self.person.is_empty()
    }

    /// Keys the folds see: the dictionary's and the virtual ones.
    pub fn key_space(&self) -> u32 {
        self.base + self.person.len() as u32
    }

    /// The dictionary key standing for key `k` (its person's for a virtual key).
    pub fn dictionary_key(&self, k: u32) -> u32 {
        match k.checked_sub(self.base) {
            Some(v) => self.person.get(v as usize).copied().unwrap_or(k),
            None => k,
        }
    }
}

/// Header of [`Identity::encode`]'s bytes.
const PERSONS_MAGIC: &[u8; 8] = b"TNRPRS01";

/// Where the resolution of `snapshot`'s log with `folded` entries folded is
/// kept: named by the log's length, `folded`, and a digest of its files.
fn cache_path(snapshot: &Snapshot, folded: usize) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for e in &snapshot.identity {
        h.update(e.path.as_bytes());
        h.update(&e.merges.to_le_bytes());
    }
    StoreLayout::identity_persons(snapshot.identity.len(), folded, h.digest128())
}

/// The kept resolution at `path`, if there is a readable one.
async fn read_cached(store: &tenure_store::Store, path: &str, base: u32) -> Option<Identity> {
    use object_store::ObjectStoreExt;
    let got = store.inner.get(&store.path(path)).await;
    let data = match got {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    };
    match data {
        Ok(data) => match Identity::decode(base, &data) {
            Ok(id) => {
                tracing::debug!("identity: read the kept persons {path}");
                Some(id)
            }
            Err(m) => {
                tracing::warn!(
                    "identity: ignoring the kept persons {path} ({m}); resolving the log"
                );
                None
            }
        },
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => {
            tracing::debug!("identity: could not read {path} ({e}); resolving the log");
            None
        }
    }
}

/// The identity log of `snapshot`, entry by entry.
async fn read_log(store: &tenure_store::Store, snapshot: &Snapshot) -> Result<Vec<Vec<Merge>>> {
    // One GET per log entry, several in flight (an object store answers
    // each in tens of milliseconds, and a server commits often), kept in
    // log order.
    use futures::StreamExt;
    let gets = snapshot.identity.iter().map(|e| {
        let (inner, location, path) = (store.inner.clone(), store.path(&e.path), e.path.clone());
        async move {
            use object_store::ObjectStoreExt;
            let unreadable = |err: object_store::Error| {
                EngineError::Unreadable(format!("identity log {path}: {err}"))
            };
            let data = inner
                .get(&location)
                .await
                .map_err(unreadable)?
                .bytes()
                .await
                .map_err(unreadable)?;
            tenure_schema::identity::decode(&data)
                .map_err(|m| EngineError::Unreadable(format!("identity log {path}: {m}")))
        }
    });
    futures::stream::iter(gets.collect::<Vec<_>>())
        .buffered(16)
        .collect::<Vec<Result<_>>>()
        .await
        .into_iter()
        .collect()
}

/// Puts `id` at `path` for the next readers, and deletes what was kept for
/// older logs: shorter ones, or this one with fewer entries folded (readers
/// of older snapshots then resolve theirs again). Best effort: a store that
/// refuses the writes is read all the same.
async fn keep(
    store: &tenure_store::Store,
    snapshot: &Snapshot,
    folded: usize,
    path: &str,
    id: &Identity,
) {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    if let Err(e) = store.inner.put(&store.path(path), id.encode().into()).await {
        tracing::debug!("identity: could not keep the persons at {path} ({e})");
        return;
    }
    tracing::debug!("identity: resolved the log, kept the persons at {path}");
    let prefix = store.path(tenure_schema::CACHE_PREFIX);
    let ours = (snapshot.identity.len(), folded);
    let stale: Vec<_> = store
        .inner
        .list(Some(&prefix))
        .filter_map(|m| async move { m.ok() })
        .filter(|m| {
            let older = m
                .location
                .filename()
                .and_then(|f| f.strip_prefix("persons-"))
                .and_then(|f| {
                    let mut it = f.split('-').map(|n| n.parse::<usize>().ok());
                    Some((it.next()??, it.next()??))
                })
                .is_some_and(|theirs| theirs < ours);
            std::future::ready(older)
        })
        .map(|m| m.location)
        .collect()
        .await;
    for location in stale {
        let _ = store.inner.delete(&location).await;
    }
}

/// The keys of a key range read under another key ([`Identity::moves`]).
#[derive(Debug, Clone)]
pub struct Moves {
    /// The keys moved.
    pub bits: MemberBits,
    /// The key each is read under, in the order of [`MemberBits::rank`].
    pub to: Vec<u32>,
}

/// A set of dictionary keys as a bit per key, with the number of keys set
/// before each 64-bit word: membership of a batch's rows is a bit test per
/// row ([`MemberBits::mask`]), and a member's rank
/// (its index in the ascending list) a popcount, both in a few hundred KB
/// per million keys that stay in cache (a binary search of 200K members
/// missed the cache on each of its 17 steps).
#[derive(Debug, Clone)]
pub struct MemberBits {
    words: Vec<u64>,
    before: Vec<u32>,
}

impl MemberBits {
    /// The set of `keys` (ascending, each below `len`).
    pub fn new(len: usize, keys: &[u32]) -> Self {
        // One more word, always zero: keys beyond the set's dictionary test
        // against it (`mask` clamps instead of branching).
        let mut words = vec![0u64; len.div_ceil(64) + 1];
        for &k in keys {
            words[k as usize / 64] |= 1 << (k % 64);
        }
        let mut before = Vec::with_capacity(words.len());
        let mut n = 0u32;
        for w in &words {
            before.push(n);
            n += w.count_ones();
        }
        MemberBits { words, before }
    }

    /// A bit per row of `keys`, set where the key is in the set, and how
    /// many are. Branch-free, 64 rows to a word (about 0.5 ns a row; the
    /// same through `collect_bool` and a bounds-checked test took 3).
    pub fn mask(&self, keys: &[u32]) -> (datafusion::arrow::buffer::BooleanBuffer, usize) {
        let mut out = Vec::with_capacity(keys.len().div_ceil(64));
        let mut count = 0;
        let (words, last) = (&self.words[..], self.words.len() - 1);
        for chunk in keys.chunks(64) {
            let mut w = 0u64;
            for (j, &k) in chunk.iter().enumerate() {
                let word = words[(k as usize / 64).min(last)];
                w |= ((word >> (k % 64)) & 1) << j;
            }
            count += w.count_ones() as usize;
            out.push(w);
        }
        let buffer = datafusion::arrow::buffer::Buffer::from_vec(out);
        (
            datafusion::arrow::buffer::BooleanBuffer::new(buffer, 0, keys.len()),
            count,
        )
    }

    /// `k`'s index among the keys of the set (ascending), if it is one.
    #[inline]
    pub fn rank(&self, k: u32) -> Option<usize> {
        let at = k as usize / 64;
        let w = *self.words.get(at)?;
        let bit = k % 64;
        if (w >> bit) & 1 == 0 {
            return None;
        }
        let below = (w & ((1u64 << bit) - 1)).count_ones();
        Some((self.before[at] + below) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_schema::identity::MergeKind;

    fn merge(kind: MergeKind, from: u32, to: u32) -> Merge {
        Merge {
            ts: 0,
            kind,
            from,
            to,
        }
    }

    #[test]
    fn kept_persons_read_back_under_a_larger_dictionary() {
        let log = vec![
            vec![
                merge(MergeKind::Identify, 7, 2),
                merge(MergeKind::Identify, 9, 4),
            ],
            vec![merge(MergeKind::Alias, 4, 2)],
        ];
        let id = Identity::of_log(12, &log, 0).unwrap();
        let bytes = id.encode();
        // The dictionary grew after the log was resolved: the same persons,
        // their virtual keys after the new dictionary's keys.
        let back = Identity::decode(20, &bytes).unwrap();
        assert_eq!(back.member, id.member);
        assert_eq!(back.absorbed, id.absorbed);
        assert_eq!(back.person, id.person);
        let shifted: Vec<u32> = id.virt.iter().map(|v| v - 12 + 20).collect();
        assert_eq!(back.virt, shifted);
        // Every key's virtual key, shifted past the larger dictionary.
        let (was, now) = (id.moves((0, 12), None), back.moves((0, 12), None));
        for k in 0..12 {
            assert_eq!(
                now.bits.rank(k).map(|r| now.to[r]),
                was.bits.rank(k).map(|r| was.to[r] - 12 + 20),
                "key {k}"
            );
        }
        assert_eq!(back.key_space(), 20 + id.person.len() as u32);
    }

    #[test]
    fn damaged_or_foreign_kept_persons_are_refused() {
        let log = vec![vec![merge(MergeKind::Identify, 3, 1)]];
        let bytes = Identity::of_log(5, &log, 0).unwrap().encode();
        let mut flipped = bytes.clone();
        flipped[21] ^= 1;
        assert_eq!(
            Identity::decode(5, &flipped).unwrap_err(),
            "checksum mismatch"
        );
        assert!(Identity::decode(5, &bytes[..bytes.len() - 3]).is_err());
        assert!(Identity::decode(5, b"TNRPRS01").is_err());
        assert!(
            Identity::decode(5, &[0u8; 40])
                .unwrap_err()
                .contains("bad header")
        );
        // Keys beyond a (smaller) dictionary: not this store's log.
        assert!(Identity::decode(3, &bytes).unwrap_err().contains("beyond"));
    }

    #[test]
    fn persons_within_one_range_are_read_under_their_own_key() {
        // Persons {1, 3}, {8, 9} and {2, 6}, named by the identified key.
        let log = vec![vec![
            merge(MergeKind::Identify, 3, 1),
            merge(MergeKind::Identify, 9, 8),
            merge(MergeKind::Identify, 6, 2),
        ]];
        let id = Identity::of_log(12, &log, 0).unwrap();
        assert_eq!(id.person, vec![1, 2, 8]);
        assert_eq!(id.member, vec![1, 2, 3, 6, 8, 9]);
        // Two ranges: {2, 6} spans both and stays under its virtual key 13.
        assert_eq!(id.targets(&[(0, 4), (4, 12)]), vec![1, 13, 1, 13, 8, 8]);
        // One range: every person under its own key.
        assert_eq!(id.targets(&[(0, 12)]), vec![1, 2, 1, 2, 8, 8]);
        // A range boundary between a person's keys, or keys beyond the
        // ranges: virtual keys.
        assert_eq!(id.targets(&[(0, 9), (9, 12)]), vec![1, 2, 1, 2, 14, 14]);
        assert_eq!(id.targets(&[(0, 6)]), vec![1, 13, 1, 13, 14, 14]);
        assert_eq!(id.targets(&[]), id.virt);
        // The keys of a range read under another key, with and without
        // targets (persons 1, 2 and 8 are virtual keys 12, 13 and 14): a
        // person's own key read in place does not move.
        let moved = |range, targets: Option<&[u32]>| {
            let m = id.moves(range, targets);
            let keys: Vec<u32> = (0..12).filter(|&k| m.bits.rank(k).is_some()).collect();
            let to: Vec<u32> = keys
                .iter()
                .map(|&k| m.to[m.bits.rank(k).unwrap()])
                .collect();
            (keys, to)
        };
        let two = id.targets(&[(0, 4), (4, 12)]);
        assert_eq!(moved((0, 4), Some(&two)), (vec![2, 3], vec![13, 1]));
        assert_eq!(moved((4, 12), Some(&two)), (vec![6, 9], vec![13, 8]));
        assert_eq!(moved((0, 4), None), (vec![1, 2, 3], vec![12, 13, 12]));
        assert_eq!(moved((9, 10), None), (vec![9], vec![14]));
    }

    #[test]
    fn member_ranks_follow_the_ascending_keys() {
        let keys = [0u32, 5, 63, 64, 65, 200, 1000];
        let bits = MemberBits::new(1001, &keys);
        for k in 0..1001u32 {
            let want = keys.iter().position(|&m| m == k);
            assert_eq!(bits.rank(k), want, "key {k}");
        }
        assert_eq!(bits.rank(5000), None);
        // Rows of keys, some beyond the set's dictionary, over two words.
        let rows: Vec<u32> = (0..130u32).map(|i| (i * 37) % 1100).collect();
        let (mask, count) = bits.mask(&rows);
        assert_eq!(mask.len(), rows.len());
        let want: Vec<bool> = rows.iter().map(|k| keys.contains(k)).collect();
        assert_eq!(mask.iter().collect::<Vec<_>>(), want);
        assert_eq!(count, want.iter().filter(|&&b| b).count());
        assert!(count > 0);
    }
}
