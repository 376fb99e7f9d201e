//! Deterministic, realistic e-commerce events for demos, tests and benchmarks.
//!
//! Users sign up over the first `days` days; each returns on later days with a
//! probability that decays with time since sign-up (scaled by a per-user
//! engagement factor), so cohort retention curves look like real ones. A session
//! is a few `view_item`s, sometimes `add_to_cart`, `checkout` and `purchase`
//! (with revenue in cents). Every user gets an A/B `variant`; variant B buys a
//! little more often (a small true effect), and a `country`.
//!
//! Output is a pure function of `(users, days, seed, start)`: each user has its
//! own random stream, and events come out day by day, like a daily export.

use crate::timestamp::{DAY_MICROS, MICROS, civil_from_days};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenSpec {
    /// Number of users.
    pub users: u64,
    /// Number of days.
    pub days: u32,
    /// Random seed.
    pub seed: u64,
    /// First day, in days since 1970-01-01 (default 2026-01-01).
    pub start_day: i64,
}

impl GenSpec {
    /// 2026-01-01, the default first day.
    pub const DEFAULT_START: i64 = 20_454;

    /// A stable name for the parameters, recorded as the source of generated data.
    pub fn source_name(&self) -> String {
        format!(
            "gen:users={},days={},seed={},start={}",
            self.users,
            self.days,
            self.seed,
            crate::timestamp::date_string(self.start_day)
        )
    }
}

/// Names of the generated events, in funnel order after `signup`.
pub const EVENTS: [&str; 5] = ["signup", "view_item", "add_to_cart", "checkout", "purchase"];
/// Countries and their weights (percent).
pub const COUNTRIES: [(&str, u32); 8] = [
    ("US", 35),
    ("CN", 12),
    ("GB", 10),
    ("DE", 10),
    ("IN", 10),
    ("FR", 8),
    ("JP", 8),
    ("BR", 7),
];

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub struct GenEvent {
    /// User number, `0..users`.
    pub user: u64,
    /// Sequence number of the event within its user.
    pub seq: u32,
    /// Index into [`EVENTS`].
    pub event: u8,
    /// Timestamp, UTC microseconds.
    pub ts: i64,
    /// Revenue in cents (purchases only).
    pub revenue_cents: Option<i64>,
    /// `A` or `B`.
    pub variant: &'static str,
    /// Country code.
    pub country: &'static str,
    /// Item viewed, carted or bought.
    pub item_id: Option<u32>,
}

impl GenEvent {
    /// Event name.
    pub fn name(&self) -> &'static str {
        EVENTS[self.event as usize]
    }

    /// The user's id: `u` and the zero-padded user number.
    pub fn user_id(&self) -> String {
        format!("u{:07}", self.user)
    }

    /// A unique, deterministic event id.
    pub fn event_id(&self, seed: u64) -> String {
        format!("{seed:x}-{:x}-{:x}", self.user, self.seq)
    }

    /// Revenue as decimal text (`12.34`).
    pub fn revenue_text(&self) -> Option<String> {
        self.revenue_cents
            .map(|c| format!("{}.{:02}", c / 100, c % 100))
    }

    /// Timestamp as RFC 3339 with milliseconds.
    pub fn ts_text(&self) -> String {
        let day = self.ts.div_euclid(DAY_MICROS);
        let (y, m, d) = civil_from_days(day);
        let rem = self.ts - day * DAY_MICROS;
        let secs = rem / MICROS;
        let ms = (rem % MICROS) / 1000;
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// SplitMix64: tiny, fast and fully specified, so output never changes with a
/// dependency upgrade.
#[derive(Debug, Clone, Copy)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.f().max(1e-12);
        let v = self.f();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// One user's generator state: 24 bytes, since it is kept for every user
/// (30M users: 720 MB; with the variant and country as `&str` it was 56
/// bytes, 1.7 GB).
struct UserState {
    rng: Rng,
    signup_day: u32,
    engagement: f32,
    seq: u32,
    /// Variant `B` (else `A`).
    variant_b: bool,
    /// Index into [`COUNTRIES`].
    country: u8,
}

const _: () = assert!(std::mem::size_of::<UserState>() == 24);

impl UserState {
    fn variant(&self) -> &'static str {
        if self.variant_b { "B" } else { "A" }
    }
}

/// Generates every event, day by day, calling `emit` for each.
pub fn generate(spec: &GenSpec, mut emit: impl FnMut(&GenEvent)) {
    let mut users: Vec<UserState> = (0..spec.users)
        .map(|u| {
            let mut rng = Rng::new(spec.seed, u);
            // Growth: more sign-ups later in the range.
            let signup_day = ((spec.days as f64) * rng.f().powf(0.85)) as u32;
            let engagement = (0.9 * rng.normal() - 0.4).exp() as f32;
            let variant_b = rng.below(2) != 0;
            let mut pick = rng.below(100) as u32;
            let mut country = 0;
            for (i, (_, w)) in COUNTRIES.iter().enumerate() {
                if pick < *w {
                    country = i as u8;
                    break;
                }
                pick -= w;
            }
            UserState {
                rng,
                signup_day: signup_day.min(spec.days.saturating_sub(1)),
                engagement,
                seq: 0,
                variant_b,
                country,
            }
        })
        .collect();
    for day in 0..spec.days {
        for (u, st) in users.iter_mut().enumerate() {
            if st.signup_day > day {
                continue;
            }
            let age = day - st.signup_day;
            let active = age == 0 || {
                let p = (0.3 * st.engagement as f64 * (age as f64).powf(-0.7)).min(0.9);
                st.rng.f() < p
            };
            if !active {
                continue;
            }
            let day_start = (spec.start_day + day as i64) * DAY_MICROS;
            let mut ts = day_start
                + (st.rng.below(86_000) as i64) * MICROS
                + st.rng.below(1000) as i64 * 1000;
            let mut ev = GenEvent {
                user: u as u64,
                seq: 0,
                event: 0,
                ts,
                revenue_cents: None,
                variant: st.variant(),
                country: COUNTRIES[st.country as usize].0,
                item_id: None,
            };
            let mut out = |st: &mut UserState,
                           ev: &mut GenEvent,
                           event: u8,
                           ts: i64,
                           item: Option<u32>,
                           rev: Option<i64>| {
                ev.seq = st.seq;
                st.seq += 1;
                ev.event = event;
                ev.ts = ts;
                ev.item_id = item;
                ev.revenue_cents = rev;
                emit(ev);
            };
            if age == 0 {
                out(st, &mut ev, 0, ts, None, None);
            }
            let views = 1 + (st.rng.f().ln() / 0.55f64.ln()) as u32;
            let mut item = 0;
            for _ in 0..views.min(12) {
                ts += (5 + st.rng.below(240) as i64) * MICROS;
                // Popular items are viewed more (roughly Zipf).
                item = (500.0 * st.rng.f().powi(3)) as u32 + 1;
                out(st, &mut ev, 1, ts, Some(item), None);
            }
            if st.rng.f() < 0.3 {
                ts += (10 + st.rng.below(300) as i64) * MICROS;
                out(st, &mut ev, 2, ts, Some(item), None);
                if st.rng.f() < 0.6 {
                    ts += (20 + st.rng.below(600) as i64) * MICROS;
                    out(st, &mut ev, 3, ts, Some(item), None);
                    let buy = if st.variant_b { 0.74 } else { 0.68 };
                    if st.rng.f() < buy {
                        ts += (5 + st.rng.below(120) as i64) * MICROS;
                        let dollars = (3.6 + 0.7 * st.rng.normal()).exp().max(1.0);
                        out(
                            st,
                            &mut ev,
                            4,
                            ts,
                            Some(item),
                            Some((dollars * 100.0).round() as i64),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GenSpec {
        GenSpec {
            users: 2000,
            days: 30,
            seed: 7,
            start_day: GenSpec::DEFAULT_START,
        }
    }

    #[test]
    fn deterministic_and_plausible() {
        let mut a = Vec::new();
        generate(&spec(), |e| a.push(e.clone()));
        let mut b = Vec::new();
        generate(&spec(), |e| b.push(e.clone()));
        assert_eq!(a, b);
        let signups = a.iter().filter(|e| e.event == 0).count();
        assert_eq!(signups, 2000, "every user signs up once");
        let purchases = a.iter().filter(|e| e.event == 4).count();
        assert!(purchases > 100, "{purchases}");
        assert!(
            a.iter()
                .all(|e| (e.event == 4) == e.revenue_cents.is_some())
        );
        let end = (GenSpec::DEFAULT_START + 31) * DAY_MICROS;
        assert!(
            a.iter()
                .all(|e| e.ts >= GenSpec::DEFAULT_START * DAY_MICROS && e.ts < end)
        );
        let mut other = spec();
        other.seed = 8;
        let mut c = Vec::new();
        generate(&other, |e| c.push(e.clone()));
        assert_ne!(a, c);
    }

    #[test]
    fn formats_timestamps_and_money() {
        let e = GenEvent {
            user: 1,
            seq: 2,
            event: 4,
            ts: GenSpec::DEFAULT_START * DAY_MICROS + 3_723_456_000,
            revenue_cents: Some(1205),
            variant: "A",
            country: "US",
            item_id: Some(3),
        };
        assert_eq!(e.ts_text(), "2026-01-01T01:02:03.456Z");
        assert_eq!(e.revenue_text().unwrap(), "12.05");
        assert_eq!(e.user_id(), "u0000001");
    }
}
