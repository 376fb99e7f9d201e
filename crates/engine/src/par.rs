//! Folding users in parallel by ranges of keys.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Folds the users `0..users` in ranges of `per` keys (the last may be
/// shorter) on up to `threads` threads, each taking the next range as it goes
/// (ranges of dense keys differ in cost: older users have more events) and
/// keeping one `scratch` for all its ranges. Returns the results in key order.
pub(crate) fn fold_ranges<T: Send, S>(
    users: usize,
    per: usize,
    threads: usize,
    scratch: impl Fn() -> S + Sync,
    fold: impl Fn(usize, usize, &mut S) -> T + Sync,
) -> Vec<T> {
    let per = per.max(1);
    let ranges = users.div_ceil(per);
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, T)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.clamp(1, ranges.max(1)))
            .map(|_| {
                let (next, scratch, fold) = (&next, &scratch, &fold);
                s.spawn(move || {
                    let mut space = scratch();
                    let mut out = Vec::new();
                    loop {
                        let r = next.fetch_add(1, Ordering::Relaxed);
                        if r >= ranges {
                            break out;
                        }
                        let lo = r * per;
                        out.push((r, fold(lo, (lo + per).min(users), &mut space)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a fold thread panicked"))
            .collect()
    });
    done.sort_by_key(|d| d.0);
    done.into_iter().map(|d| d.1).collect()
}

/// `n` copies of `value` in memory the kernel is asked to back with huge
/// pages (2 MiB): per-user state read and written at random, where 4 KiB
/// pages cost a fault and a TLB miss each. Only advice: where it is refused
/// the vector is an ordinary one.
pub(crate) fn huge_vec<T: Copy>(n: usize, value: T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_huge(v.as_mut_ptr() as usize, n * std::mem::size_of::<T>());
    v.resize(n, value);
    v
}

/// `n` zeros, in memory the kernel is asked to back with huge pages and
/// not written here: a large zeroed allocation is fresh memory the kernel
/// zeroes when it is first touched, so unlike [`huge_vec`] nothing writes
/// it twice (at 10M users, the KPI's 80 MB of first times were written
/// once by the kernel and again by a fill).
pub(crate) fn huge_zeroed(n: usize) -> Vec<u64> {
    let mut v = vec![0u64; n];
    advise_huge(v.as_mut_ptr() as usize, n * 8);
    v
}

/// Asks for huge pages under the whole 2 MiB pages of `bytes` at `start`.
fn advise_huge(start: usize, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if hi > lo {
            #[allow(unsafe_code)]
            // SAFETY: madvise only advises the kernel about pages of the
            // caller's own allocation (whole 2 MiB pages inside it); it
            // changes no memory and a refusal is ignored.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_folded_once_in_order() {
        for (users, per, threads) in [(0, 5, 2), (1, 5, 2), (10, 3, 1), (10, 3, 4), (1000, 7, 3)] {
            let got: Vec<(usize, usize)> =
                fold_ranges(users, per, threads, || (), |lo, hi, _| (lo, hi));
            let keys: Vec<usize> = got.iter().flat_map(|&(lo, hi)| lo..hi).collect();
            assert_eq!(
                keys,
                (0..users).collect::<Vec<_>>(),
                "{users} {per} {threads}"
            );
        }
    }

    #[test]
    fn huge_vectors_hold_their_values_small_or_large() {
        for n in [0, 1, 1000, 3 << 20] {
            let v = super::huge_vec(n, 7u64);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 7));
            let z = super::huge_zeroed(n);
            assert_eq!(z.len(), n);
            assert!(z.iter().all(|&x| x == 0));
        }
    }
}
