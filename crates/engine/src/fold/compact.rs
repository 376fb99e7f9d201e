//! Compact serde of per-user integer vectors in partial results.
//!
//! On a cluster, a key range's partial result goes over the wire. Per-user
//! vectors there are mostly one value (a count or sum of 0 for users who did
//! nothing, `NEVER` for a purchase time of users who never bought), so a
//! vector is written either densely (fixed-width little-endian) or, when
//! shorter, as its most common value plus the entries that differ: the gap
//! to the previous such entry and the value, both as LEB128 varints (values
//! zigzag-encoded). Per-user purchase counts of 500,000 users take about
//! 1 byte per user instead of 16.
//!
//! Use as `#[serde(with = "crate::fold::compact")]` on a `Vec` of `i128`,
//! `i64` or `u32`.

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// An integer a compact vector can hold.
pub(crate) trait Int: Copy + PartialEq + 'static {
    const WIDTH: usize;
    const MIN: Self;
    const MAX: Self;
    const ZERO: Self;
    fn wide(self) -> i128;
    fn narrow(v: i128) -> Option<Self>;
    fn put(self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Self;
}

macro_rules! int {
    ($t:ty, $w:expr) => {
        impl Int for $t {
            const WIDTH: usize = $w;
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
            const ZERO: Self = 0;
            fn wide(self) -> i128 {
                self as i128
            }
            fn narrow(v: i128) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("width checked"))
            }
        }
    };
}
int!(i128, 16);
int!(i64, 8);
int!(u32, 4);

const DENSE: u8 = 0;
const SPARSE: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

fn unzigzag(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

/// Reads a varint at `*at`, moving past it.
fn get_varint(b: &[u8], at: &mut usize) -> Option<u128> {
    let mut v = 0u128;
    for shift in (0..128).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u128::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The bytes of `v`: dense or sparse, whichever is shorter.
pub(crate) fn encode<T: Int>(v: &[T]) -> Vec<u8> {
    let dense_len = 1 + v.len() * T::WIDTH;
    // The most common of the usual fillers (and of the first value).
    let candidates = [
        T::ZERO,
        T::MIN,
        T::MAX,
        v.first().copied().unwrap_or(T::ZERO),
    ];
    let base = candidates
        .iter()
        .copied()
        .max_by_key(|c| v.iter().filter(|x| *x == c).count())
        .unwrap_or(T::ZERO);
    let mut out = vec![SPARSE];
    put_varint(&mut out, v.len() as u128);
    put_varint(&mut out, zigzag(base.wide()));
    let mut last = 0usize;
    for (i, x) in v.iter().enumerate() {
        if *x == base {
            continue;
        }
        put_varint(&mut out, (i - last) as u128);
        put_varint(&mut out, zigzag(x.wide()));
        last = i;
        if out.len() >= dense_len {
            break;
        }
    }
    if out.len() < dense_len {
        return out;
    }
    let mut out = Vec::with_capacity(dense_len);
    out.push(DENSE);
    for x in v {
        x.put(&mut out);
    }
    out
}

/// The vector [`encode`] wrote.
pub(crate) fn decode<T: Int>(b: &[u8]) -> Result<Vec<T>, String> {
    let bad = || "a malformed compact vector".to_string();
    match b.first() {
        Some(&DENSE) if (b.len() - 1).is_multiple_of(T::WIDTH) => {
            Ok(b[1..].chunks_exact(T::WIDTH).map(T::get).collect())
        }
        Some(&SPARSE) => {
            let mut at = 1;
            let len = get_varint(b, &mut at).ok_or_else(bad)?;
            let len = usize::try_from(len).map_err(|_| bad())?;
            // A vector is indexed by u32 user keys.
            if len > (1 << 32) {
                return Err(bad());
            }
            let value = |v: u128| T::narrow(unzigzag(v)).ok_or_else(bad);
            let base = value(get_varint(b, &mut at).ok_or_else(bad)?)?;
            // A length from malformed bytes must not abort the process.
            let mut v = Vec::new();
            v.try_reserve_exact(len).map_err(|_| bad())?;
            v.resize(len, base);
            let mut i = 0usize;
            while at < b.len() {
                let gap = get_varint(b, &mut at).ok_or_else(bad)?;
                i = i
                    .checked_add(usize::try_from(gap).map_err(|_| bad())?)
                    .ok_or_else(bad)?;
                let x = value(get_varint(b, &mut at).ok_or_else(bad)?)?;
                *v.get_mut(i).ok_or_else(bad)? = x;
            }
            Ok(v)
        }
        _ => Err(bad()),
    }
}

#[allow(clippy::ptr_arg)] // serde's `with` passes the field itself
pub(crate) fn serialize<T: Int, S: Serializer>(v: &Vec<T>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(&encode(v))
}

pub(crate) fn deserialize<'de, T: Int, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    struct Bytes;
    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("the bytes of a compact vector")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    let bytes = d.deserialize_byte_buf(Bytes)?;
    decode(&bytes).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Wrapped {
        #[serde(with = "super")]
        wide: Vec<i128>,
        #[serde(with = "super")]
        times: Vec<i64>,
        #[serde(with = "super")]
        counts: Vec<u32>,
    }

    #[test]
    fn mostly_one_value_is_short() {
        let mut counts = vec![0i128; 500_000];
        for i in (0..counts.len()).step_by(5) {
            counts[i] = (i % 7) as i128;
        }
        let bytes = encode(&counts);
        assert!(bytes.len() < 500_000, "{} bytes", bytes.len());
        assert_eq!(decode::<i128>(&bytes).unwrap(), counts);
        let never = vec![i64::MIN; 1000];
        assert!(encode(&never).len() < 16);
        assert_eq!(decode::<i64>(&encode(&never)).unwrap(), never);
    }

    #[test]
    fn varied_values_stay_dense() {
        let v: Vec<i64> = (0..1000)
            .map(|i| 1_700_000_000_000_000 + i * 7919)
            .collect();
        let bytes = encode(&v);
        assert_eq!(bytes[0], DENSE);
        assert_eq!(bytes.len(), 1 + 8 * 1000);
        assert_eq!(decode::<i64>(&bytes).unwrap(), v);
    }

    #[test]
    fn malformed_bytes_are_an_error() {
        assert!(decode::<i64>(&[]).is_err());
        assert!(decode::<i64>(&[DENSE, 1, 2, 3]).is_err());
        assert!(
            decode::<u32>(&[SPARSE, 2, 0, 5, 1]).is_err(),
            "entry 5 of 2"
        );
        assert!(
            decode::<u32>(&[SPARSE, 2, 0, 0, 0x80]).is_err(),
            "cut varint"
        );
        assert!(decode::<u32>(&[SPARSE, 1, 0, 0, 1]).is_err(), "-1 as u32");
    }

    proptest! {
        #[test]
        fn round_trips(
            wide in prop::collection::vec(prop_oneof![Just(0i128), Just(i128::MAX), Just(i128::MIN), any::<i128>()], 0..200),
            times in prop::collection::vec(prop_oneof![Just(i64::MIN), any::<i64>()], 0..200),
            counts in prop::collection::vec(prop_oneof![Just(0u32), 0..5u32, any::<u32>()], 0..200),
        ) {
            let w = Wrapped { wide, times, counts };
            let bytes = bincode::serialize(&w).unwrap();
            let back: Wrapped = bincode::deserialize(&bytes).unwrap();
            prop_assert_eq!(back, w);
        }
    }
}
