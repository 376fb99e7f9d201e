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

use std::sync::Arc;

use tenure_schema::Snapshot;
use tenure_schema::identity::{Merge, Persons, resolve};

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
    /// `member` as a bit per dictionary key (made on first use, not encoded).
    #[serde(skip)]
    bits: std::sync::OnceLock<Vec<u64>>,
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
    pub async fn load(
        store: &tenure_store::Store,
        snapshot: &Snapshot,
    ) -> Result<Option<Arc<Self>>> {
        if snapshot.identity.is_empty() {
            return Ok(None);
        }
        // One GET per log entry, several in flight (an object store answers
        // each in tens of milliseconds, and a server commits often), kept in
        // log order.
        use futures::StreamExt;
        let gets = snapshot.identity.iter().map(|e| {
            let (inner, location, path) =
                (store.inner.clone(), store.path(&e.path), e.path.clone());
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
        let log: Vec<Vec<Merge>> = futures::stream::iter(gets.collect::<Vec<_>>())
            .buffered(16)
            .collect::<Vec<Result<_>>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let folded = snapshot
            .files
            .iter()
            .map(|f| f.identity as usize)
            .min()
            .unwrap_or(log.len());
        let base = u32::try_from(snapshot.users.count)
            .map_err(|_| EngineError::Unreadable("more than 4 billion users".into()))?;
        Ok(Self::of_log(base, &log, folded)
            .filter(|i| i.gone() > 0)
            .map(Arc::new))
    }

    /// The virtual key `k`'s rows are read under, if any.
    #[inline]
    pub fn virtual_of(&self, k: u32) -> Option<u32> {
        let i = self.member.binary_search(&k).ok()?;
        Some(self.virt[i])
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

    /// A bit per dictionary key, set for the diverted ones (made on first
    /// use).
    pub fn member_bits(&self) -> &[u64] {
        self.bits.get_or_init(|| {
            let mut bits = vec![0u64; (self.base as usize).div_ceil(64)];
            for &k in &self.member {
                bits[k as usize / 64] |= 1 << (k % 64);
            }
            bits
        })
    }

    /// The diverted keys in `lo..hi`, ascending.
    pub fn members_in(&self, lo: u32, hi: u32) -> &[u32] {
        let a = self.member.partition_point(|&k| k < lo);
        let b = self.member.partition_point(|&k| k < hi);
        &self.member[a..b]
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
