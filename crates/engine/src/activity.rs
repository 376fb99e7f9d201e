//! Per-user bitmaps of active periods, indexed by dense `user_key` (no hash
//! table, no string), and the bit helpers the folds over them share
//! (retention, lifecycle, KPIs, stickiness: see [`crate::fold`]).

/// Per-user bitmaps of periods with start and return events.
#[derive(Debug, Clone)]
pub struct Activity {
    /// Periods covered (bits per user).
    pub periods: usize,
    /// Words per user.
    pub words: usize,
    /// Users (size of the key space).
    pub users: usize,
    /// Start-event bits, `users * words`.
    pub start: Vec<u64>,
    /// Return-event bits; `None` when return events are start events.
    pub ret: Option<Vec<u64>>,
}

impl Activity {
    /// Empty bitmaps for `users` and `periods` (separate return bits if asked).
    pub fn new(users: usize, periods: usize, separate_return: bool) -> Self {
        let words = periods.div_ceil(64).max(1);
        Self {
            periods,
            words,
            users,
            start: vec![0; users * words],
            ret: separate_return.then(|| vec![0; users * words]),
        }
    }

    /// Marks user `u` active (start and return) in period `p`.
    pub fn set(&mut self, u: usize, p: usize) {
        self.start[u * self.words + p / 64] |= 1 << (p % 64);
    }

    /// The start bits of user `u`.
    #[inline]
    pub fn start_of(&self, u: usize) -> &[u64] {
        &self.start[u * self.words..(u + 1) * self.words]
    }

    /// The return bits of user `u`.
    #[inline]
    pub fn return_of(&self, u: usize) -> &[u64] {
        match &self.ret {
            Some(r) => &r[u * self.words..(u + 1) * self.words],
            None => self.start_of(u),
        }
    }
}

/// Lowest set bit of a multi-word bitmap.
#[inline]
pub fn first_bit(bits: &[u64]) -> Option<usize> {
    bits.iter()
        .enumerate()
        .find(|(_, w)| **w != 0)
        .map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
}

/// Is bit `i` set?
#[inline]
pub fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] >> (i % 64) & 1 == 1
}
