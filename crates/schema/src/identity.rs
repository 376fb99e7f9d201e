//! Identity merges: `identify` and `alias` join users into one person,
//! retroactively, as PostHog merges persons.
//!
//! Ingest records each merge in the store's identity log (files listed in
//! [`crate::Snapshot::identity`], in commit order); nothing already written
//! is rewritten. Readers resolve the log into persons ([`resolve`]) and count
//! every key of a person as one user; `tenure compact` folds the merges into
//! the files (rows get their person's key).
//!
//! # Rules
//!
//! Merges apply in the order they reached the store (commit order, then
//! input order within a commit), not by timestamp, so that a decision once
//! made is never undone by a late event.
//!
//! - `identify` with `userId` U and `anonymousId` A (A != U): A's person joins
//!   U's person, unless A's person is already *identified* (A was itself
//!   identified, or already joined an identified person): then the two stay
//!   apart (a conflict, counted). Either way U's person is identified from
//!   then on. An `identify` without an `anonymousId` (or with A = U)
//!   records nothing: identifying a user alone (a server-side library's
//!   `identify`, PostHog's `$set`) does not make it identified.
//! - `alias` with `previousId` P and `userId` U: P's person joins U's person
//!   whatever either is: the explicit way to merge two identified users. U's
//!   person is identified from then on.
//! - Chains resolve transitively (a union-find): if A joined B and B later
//!   joins C, A's events are C's.
//! - A person is named by the user it was identified as: U, when a merge
//!   into U identifies U's person; the name stays while more users join
//!   it. An identified person that joins another by `alias` takes the name
//!   of the person it joins. Persons never split.

/// What made a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MergeKind {
    /// `identify`: an anonymous id joins an identified user.
    Identify = 1,
    /// `alias`: a previous id joins a user, identified or not.
    Alias = 2,
}

/// One merge of the log, by user key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Merge {
    /// Time of the `identify`/`alias` event (UTC µs); informational: merges
    /// apply in log order.
    pub ts: i64,
    /// What made it.
    pub kind: MergeKind,
    /// The anonymous (identify) or previous (alias) user.
    pub from: u32,
    /// The identified user.
    pub to: u32,
}

const MAGIC: &[u8; 8] = b"TNRIDN01";
const RECORD: usize = 8 + 1 + 4 + 4;

/// The bytes of an identity file holding `merges`.
pub fn encode(merges: &[Merge]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + merges.len() * RECORD);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(merges.len() as u64).to_le_bytes());
    for m in merges {
        out.extend_from_slice(&m.ts.to_le_bytes());
        out.push(m.kind as u8);
        out.extend_from_slice(&m.from.to_le_bytes());
        out.extend_from_slice(&m.to.to_le_bytes());
    }
    out
}

/// The merges of an identity file; an error names what is wrong with it.
pub fn decode(data: &[u8]) -> Result<Vec<Merge>, String> {
    if data.len() < 16 || &data[..8] != MAGIC {
        return Err("not an identity file (bad header)".into());
    }
    let n = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes")) as usize;
    let body = &data[16..];
    if n.checked_mul(RECORD) != Some(body.len()) {
        return Err(format!(
            "truncated identity file: {} bytes for {n} merges",
            data.len()
        ));
    }
    body.chunks_exact(RECORD)
        .map(|r| {
            let kind = match r[8] {
                1 => MergeKind::Identify,
                2 => MergeKind::Alias,
                k => return Err(format!("unknown merge kind {k}")),
            };
            Ok(Merge {
                ts: i64::from_le_bytes(r[..8].try_into().expect("8 bytes")),
                kind,
                from: u32::from_le_bytes(r[9..13].try_into().expect("4 bytes")),
                to: u32::from_le_bytes(r[13..17].try_into().expect("4 bytes")),
            })
        })
        .collect()
}

/// Persons after applying merges in order (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Persons {
    /// Per key: its parent in the union-find ([`NONE`]: never merged; a
    /// root is its own parent).
    parent: Vec<u32>,
    /// Per root: the person's name (canonical key, [`NONE`] for none yet)
    /// and whether identified.
    root: Vec<(u32, bool)>,
    /// Identifies refused because the anonymous side was already identified.
    pub conflicts: u64,
}

/// No parent: a key never merged.
const NONE: u32 = u32::MAX;

impl Persons {
    fn grow(&mut self, k: u32) {
        let n = k as usize + 1;
        if self.parent.len() < n {
            self.parent.resize(n, NONE);
            self.root.resize(n, (NONE, false));
        }
    }

    fn find(&mut self, k: u32) -> u32 {
        let Some(&p) = self.parent.get(k as usize) else {
            return k;
        };
        if p == NONE || p == k {
            return k;
        }
        let mut r = p;
        while self.parent[r as usize] != r {
            r = self.parent[r as usize];
        }
        // Path compression.
        let mut x = k;
        while self.parent[x as usize] != r {
            let next = self.parent[x as usize];
            self.parent[x as usize] = r;
            x = next;
        }
        r
    }

    /// The person's (name, identified) of root `r`.
    fn info(&self, r: u32) -> (u32, bool) {
        match self.root.get(r as usize) {
            Some(&(name, identified)) if name != NONE => (name, identified),
            _ => (r, false),
        }
    }

    /// Applies one merge.
    pub fn apply(&mut self, m: &Merge) {
        self.grow(m.to.max(m.from));
        let to = self.find(m.to);
        let (name_to, identified_to) = self.info(to);
        let name = if identified_to { name_to } else { m.to };
        if m.from != m.to {
            let from = self.find(m.from);
            if from != to {
                let (_, identified_from) = self.info(from);
                if m.kind == MergeKind::Identify && identified_from {
                    self.conflicts += 1;
                } else {
                    self.parent[from as usize] = to;
                    self.parent[to as usize] = to;
                    self.root[from as usize] = (NONE, false);
                }
            }
        }
        self.root[to as usize] = (name, true);
    }

    /// The name (canonical key) of `k`'s person: `k` for a user never merged.
    pub fn person(&mut self, k: u32) -> u32 {
        let r = self.find(k);
        self.info(r).0
    }

    /// Every key that belongs to a person of more than one key, with its
    /// person's name, sorted by key.
    pub fn members(&mut self) -> Vec<(u32, u32)> {
        (0..self.parent.len() as u32)
            .filter(|&k| self.parent[k as usize] != NONE)
            .collect::<Vec<_>>()
            .into_iter()
            .map(|k| (k, self.person(k)))
            .collect()
    }
}

/// The persons of a log (merges in log order).
pub fn resolve<'a>(log: impl IntoIterator<Item = &'a Merge>) -> Persons {
    let mut p = Persons::default();
    for m in log {
        p.apply(m);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: MergeKind, from: u32, to: u32) -> Merge {
        Merge {
            ts: 0,
            kind,
            from,
            to,
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let log = vec![m(MergeKind::Identify, 1, 2), m(MergeKind::Alias, 7, 3)];
        let bytes = encode(&log);
        assert_eq!(decode(&bytes).unwrap(), log);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(b"nonsense").is_err());
    }

    #[test]
    fn identify_merges_anonymous_alias_merges_identified() {
        use MergeKind::*;
        // a0 -> u1; a2 -> u3; then u3's anonymous a2 cannot join u1 by identify.
        let mut p = resolve(&[m(Identify, 0, 1), m(Identify, 2, 3), m(Identify, 2, 1)]);
        assert_eq!(p.person(0), 1);
        assert_eq!(p.person(2), 3);
        assert_eq!(p.conflicts, 1);
        // An identified user cannot be identify-merged either...
        p.apply(&m(Identify, 3, 1));
        assert_eq!(p.person(3), 3);
        assert_eq!(p.conflicts, 2);
        // ...but alias merges them, named after the alias target.
        p.apply(&m(Alias, 3, 1));
        assert_eq!((p.person(2), p.person(3), p.person(0)), (1, 1, 1));
        // Chains: 1's person joins 9's by alias: all of them are 9's.
        p.apply(&m(Alias, 1, 9));
        assert_eq!(p.members(), vec![(0, 9), (1, 9), (2, 9), (3, 9), (9, 9)]);
    }
}
