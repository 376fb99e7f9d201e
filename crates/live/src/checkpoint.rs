//! The live state as bytes, so a restart reads it back instead of folding
//! the whole store again ([`Live::write_state`], [`Live::read_state`]).
//!
//! Compact on purpose (a store has millions of mostly idle users): integers
//! are LEB128 varints (signed ones zigzagged), times inside a user are
//! deltas. What is derived is not written: clocks and timers are set again
//! by [`Live::settle`], member counts and bitmaps from each user's bits. The
//! caller frames the bytes (a header naming the plan, a checksum).

use std::io::{self, Write};

use crate::state::User;
use crate::{Live, LiveEvent, Plan, Prop};

/// Appends `v` as a LEB128 varint.
pub(crate) fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a signed integer, zigzagged.
pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a 128-bit signed integer, zigzagged.
pub(crate) fn put_i128(out: &mut Vec<u8>, v: i128) {
    let mut z = ((v << 1) ^ (v >> 127)) as u128;
    while z >= 0x80 {
        out.push(z as u8 | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends a length-prefixed string.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads what the `put_` functions wrote; every read is bounds-checked and
/// a short or malformed input is an error, never a panic.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("malformed live state at byte {}: {what}", self.at))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        match self.bytes.get(self.at) {
            Some(&b) => {
                self.at += 1;
                Ok(b)
            }
            None => self.fail("ends early"),
        }
    }

    pub(crate) fn u128(&mut self) -> Result<u128, String> {
        let mut v = 0u128;
        for shift in (0..128).step_by(7) {
            let b = self.u8()?;
            v |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail("a number too long")
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        // The common case (a small number, whole in the buffer) without the
        // general loop: a restart reads hundreds of millions of these.
        if let Some(&b) = self.bytes.get(self.at)
            && b < 0x80
        {
            self.at += 1;
            return Ok(u64::from(b));
        }
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return self.fail("a number out of range");
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail("a number too long")
    }

    pub(crate) fn i64(&mut self) -> Result<i64, String> {
        let z = self.u64()?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    pub(crate) fn i128(&mut self) -> Result<i128, String> {
        let z = self.u128()?;
        Ok((z >> 1) as i128 ^ -((z & 1) as i128))
    }

    pub(crate) fn len(&mut self) -> Result<usize, String> {
        let n = self.u64()?;
        if n > (self.bytes.len() - self.at) as u64 {
            return self.fail("a length past the end");
        }
        Ok(n as usize)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() - self.at {
            return self.fail("ends early");
        }
        let b = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(b)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, String> {
        let n = self.len()?;
        let b = self.bytes(n)?;
        std::str::from_utf8(b).or_else(|_| self.fail("text that is not UTF-8"))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, String> {
        let b = self.bytes(8)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.at
    }
}

pub(crate) fn put_event(out: &mut Vec<u8>, ev: &LiveEvent) {
    put_str(out, &ev.event);
    put_i64(out, ev.ts);
    put_u64(out, ev.props.len() as u64);
    for (name, p) in &ev.props {
        put_str(out, name);
        match p {
            Prop::Text(t) => {
                out.push(0);
                put_str(out, t);
            }
            Prop::Exact(m, s) => {
                out.push(1);
                put_i128(out, *m);
                put_u64(out, u64::from(*s));
            }
            Prop::Float(x) => {
                out.push(2);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Prop::Bool(b) => out.push(3 + u8::from(*b)),
            Prop::Time(t) => {
                out.push(5);
                put_i64(out, *t);
            }
            Prop::Json(t) => {
                out.push(6);
                put_str(out, t);
            }
        }
    }
}

pub(crate) fn get_event(r: &mut Reader<'_>, user_id: &str) -> Result<LiveEvent, String> {
    let event = r.str()?.to_string();
    let ts = r.i64()?;
    let n = r.len()?;
    let mut props = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?.to_string();
        let p = match r.u8()? {
            0 => Prop::Text(r.str()?.to_string()),
            1 => {
                let m = r.i128()?;
                let s = u32::try_from(r.u64()?).map_err(|_| "a scale out of range")?;
                Prop::Exact(m, s)
            }
            2 => Prop::Float(r.f64()?),
            3 => Prop::Bool(false),
            4 => Prop::Bool(true),
            5 => Prop::Time(r.i64()?),
            6 => Prop::Json(r.str()?.to_string()),
            t => return Err(format!("malformed live state: a property of kind {t}")),
        };
        props.push((name, p));
    }
    Ok(LiveEvent {
        user_id: user_id.to_string(),
        event,
        ts,
        props,
    })
}

impl Live {
    /// Writes every user's state (id, features' state, segment bits). A
    /// rebuild from it with the same plan ([`Live::read_state`]) evaluates
    /// as this state does from here on.
    pub fn write_state(&self, w: &mut impl Write) -> io::Result<()> {
        let mut buf = Vec::with_capacity(1 << 20);
        put_u64(&mut buf, self.users.len() as u64);
        for (u, user) in self.users.iter().enumerate() {
            put_str(&mut buf, self.ids.get(u as u32));
            user.encode(&self.plan, &mut buf);
            if buf.len() >= 1 << 20 {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        w.write_all(&buf)
    }

    /// The state [`Live::write_state`] wrote, for `plan` (the plan it was
    /// written with: the caller checks). Returns it and the bytes read.
    /// Evaluate nothing before [`Live::settle`] with [`Before::Kept`].
    pub fn read_state(plan: Plan, bytes: &[u8]) -> Result<(Live, usize), String> {
        let mut r = Reader::new(bytes);
        let n = r.u64()?;
        if n > u32::MAX as u64 {
            return Err(format!("malformed live state: {n} users"));
        }
        let mut live = Live::new(plan);
        live.reserve(n as usize);
        for _ in 0..n {
            let id = r.str()?;
            // Written from a table of distinct ids (and checksummed by the
            // caller): added without a lookup first.
            let u = live.ids.push_new(id);
            let user = User::decode(&live.plan, id, &mut r)?;
            let bits = user.members;
            live.users.push(user);
            for i in 0..live.plan.segments.len() {
                if bits >> i & 1 == 1 {
                    live.mark(i, u, true);
                }
            }
            if bits >> live.plan.segments.len().min(63) != 0 && live.plan.segments.len() < 64 {
                return Err(format!(
                    "malformed live state: user {id:?} in a segment the plan does not have"
                ));
            }
        }
        Ok((live, r.position()))
    }
}
