//! Per-user sets of periods (days, weeks) kept period-major: for each period
//! a bitmap over the range's users. The rows of one day's file then touch
//! one bitmap of `users / 8` bytes, which stays in cache, instead of a word
//! per user scattered over the whole range; [`PeriodBits::user_major`] turns
//! 64 users at a time back into per-user words when the range finishes.

/// Bit `u % 64` of word `p * blocks + u / 64`: user `u` (from the range's
/// first key) was seen in period `p`.
#[derive(Debug, Clone)]
pub struct PeriodBits {
    users: usize,
    blocks: usize,
    periods: usize,
    bits: Vec<u64>,
}

impl PeriodBits {
    /// No user in any of `periods` periods.
    pub fn new(users: usize, periods: usize) -> Self {
        let blocks = users.div_ceil(64);
        Self {
            users,
            blocks,
            periods,
            bits: crate::par::huge_zeroed(blocks * periods),
        }
    }

    /// Number of users.
    pub fn users(&self) -> usize {
        self.users
    }

    /// Words per user in [`Self::user_major`]'s output (`periods / 64`,
    /// at least one).
    pub fn words(&self) -> usize {
        self.periods.div_ceil(64).max(1)
    }

    /// Number of blocks of 64 users.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Users `64 * block ..` in period `p` (bit `i` is user `64 * block + i`).
    #[inline]
    pub fn word(&self, p: usize, block: usize) -> u64 {
        self.bits[p * self.blocks + block]
    }

    /// The bitmap of period `p`, to write.
    #[inline]
    pub fn period_mut(&mut self, p: usize) -> &mut [u64] {
        &mut self.bits[p * self.blocks..(p + 1) * self.blocks]
    }

    /// Marks user `u` in period `p`.
    #[inline]
    pub fn set(&mut self, p: usize, u: usize) {
        self.bits[p * self.blocks + u / 64] |= 1u64 << (u % 64);
    }

    /// Marks every user `key - lo` of `keys` in period `p`; fastest when
    /// keys ascend (a word's bits are gathered before it is written).
    pub fn set_keys(&mut self, p: usize, keys: &[u32], lo: u32) {
        let bitmap = &mut self.bits[p * self.blocks..(p + 1) * self.blocks];
        let (mut word, mut bits) = (usize::MAX, 0u64);
        for &k in keys {
            let u = (k - lo) as usize;
            if u / 64 != word {
                if let Some(w) = bitmap.get_mut(word) {
                    *w |= bits;
                }
                (word, bits) = (u / 64, 0);
            }
            bits |= 1u64 << (u % 64);
        }
        if let Some(w) = bitmap.get_mut(word) {
            *w |= bits;
        }
    }

    /// The periods of users `64 * block ..` (at most 64) as
    /// [`Self::words`] words per user (period `p` is bit `p % 64` of the
    /// user's word `p / 64`), written into `out` (`64 * words` long).
    pub fn user_major(&self, block: usize, out: &mut [u64]) {
        let words = self.words();
        out.fill(0);
        for p in 0..self.periods {
            let mut w = self.bits[p * self.blocks + block];
            while w != 0 {
                let u = w.trailing_zeros() as usize;
                w &= w - 1;
                out[u * words + p / 64] |= 1u64 << (p % 64);
            }
        }
    }
}

/// A bit per value of `values`, set where `test` holds. Each 64 values'
/// tests go to 64 bytes (a loop the compiler vectorises), and each 8 bytes
/// of 0 and 1 become 8 bits by one multiplication: 0.2 ns a row on one-byte
/// keys and 0.4 on four-byte ones, against 0.6-0.8 with a shift per bit and
/// 1.6 through `collect_bool` with an indexed closure (bounds-checked).
pub fn pack_bits<T: Copy>(
    values: &[T],
    test: impl Fn(T) -> bool,
) -> datafusion::arrow::buffer::BooleanBuffer {
    /// Byte i (0 or 1) of a word to bit 56 + i; no two products overlap.
    const GATHER: u64 = 0x0102_0408_1020_4080;
    let mut words = Vec::with_capacity(values.len().div_ceil(64));
    let pack = |bytes: &[u8; 64]| {
        let mut w = 0u64;
        for (i, q) in bytes.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(q.try_into().expect("8 bytes"));
            w |= (v.wrapping_mul(GATHER) >> 56) << (8 * i);
        }
        w
    };
    let chunks = values.chunks_exact(64);
    let rest = chunks.remainder();
    let mut bytes = [0u8; 64];
    for c in chunks {
        for (b, &v) in bytes.iter_mut().zip(c) {
            *b = u8::from(test(v));
        }
        words.push(pack(&bytes));
    }
    if !rest.is_empty() {
        bytes = [0u8; 64];
        for (b, &v) in bytes.iter_mut().zip(rest) {
            *b = u8::from(test(v));
        }
        words.push(pack(&bytes));
    }
    datafusion::arrow::buffer::BooleanBuffer::new(
        datafusion::arrow::buffer::Buffer::from_vec(words),
        0,
        values.len(),
    )
}

/// The earliest and latest of `ts` (in one pass the compiler vectorises).
pub fn min_max(ts: &[i64]) -> Option<(i64, i64)> {
    if ts.is_empty() {
        return None;
    }
    let (mut lo, mut hi) = ([i64::MAX; 8], [i64::MIN; 8]);
    let chunks = ts.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            lo[j] = lo[j].min(c[j]);
            hi[j] = hi[j].max(c[j]);
        }
    }
    for &t in rest {
        lo[0] = lo[0].min(t);
        hi[0] = hi[0].max(t);
    }
    Some((
        lo.into_iter().min().expect("8"),
        hi.into_iter().max().expect("8"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_bits_are_the_test_of_each_value() {
        // Whole words and a remainder, and an empty input.
        for n in [0usize, 1, 63, 64, 65, 200] {
            let values: Vec<i32> = (0..n as i32).map(|i| (i * 7) % 5).collect();
            let bits = pack_bits(&values, |v| v == 3);
            assert_eq!(bits.len(), n);
            for (i, &v) in values.iter().enumerate() {
                assert_eq!(bits.value(i), v == 3, "n {n} row {i}");
            }
            assert_eq!(
                bits.count_set_bits(),
                values.iter().filter(|&&v| v == 3).count()
            );
            // Every pattern of a byte's neighbours: all set, none, alternate.
            let all = pack_bits(&values, |_| true);
            assert_eq!(all.count_set_bits(), n);
            let odd = pack_bits(&values, |v| v % 2 == 1);
            for (i, &v) in values.iter().enumerate() {
                assert_eq!(odd.value(i), v % 2 == 1, "n {n} row {i}");
            }
        }
    }

    #[test]
    fn user_major_is_the_transpose_of_what_was_set() {
        let (users, periods) = (150usize, 70usize);
        let mut b = PeriodBits::new(users, periods);
        let words = b.words();
        assert_eq!(words, periods.div_ceil(64));
        let mut want = vec![vec![false; periods]; users];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..600 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let (u, p) = (
                (state % users as u64) as usize,
                ((state >> 20) % periods as u64) as usize,
            );
            want[u][p] = true;
            b.set(p, u);
        }
        // Sorted keys with repeats, through the gathering path.
        let keys: Vec<u32> = (0..users as u32)
            .flat_map(|k| [k + 1000, k + 1000])
            .step_by(3)
            .collect();
        b.set_keys(69, &keys, 1000);
        for &k in &keys {
            want[(k - 1000) as usize][69] = true;
        }
        let mut out = vec![0u64; 64 * words];
        for block in 0..b.blocks() {
            b.user_major(block, &mut out);
            for i in 0..64.min(users - block * 64) {
                let u = block * 64 + i;
                for (p, &w) in want[u].iter().enumerate() {
                    assert_eq!(
                        out[i * words + p / 64] >> (p % 64) & 1 == 1,
                        w,
                        "user {u} period {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn min_max_of_every_length() {
        for n in 0..40i64 {
            let ts: Vec<i64> = (0..n).map(|i| (i * 7919) % 37 - 18).collect();
            let want = ts.iter().min().copied().zip(ts.iter().max().copied());
            assert_eq!(min_max(&ts), want);
        }
    }
}
