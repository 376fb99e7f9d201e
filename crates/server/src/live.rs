//! Live segments in the server (`--segments`): the per-user state of
//! `tenure-live`, updated from every acknowledged event; a timer thread that
//! fires time-driven changes; the transition journal and the sinks; the
//! profile API's answers.
//!
//! Durability of transitions: every batch of transitions is first appended
//! to the journal (`<wal>/live/journal.ndjson`) and fsynced, then handed to
//! the sinks. Each sink records how far into the journal it has delivered
//! (`<wal>/live/<sink>.progress`, with the NDJSON sink's own file length
//! beside it), so after a crash it resumes from there: the NDJSON sink first
//! truncates its file to the recorded length (dropping lines written after
//! the last record) and so holds each transition once; the store sink's
//! records carry the transition id as `messageId`/`event_id`, which the store
//! keeps once; a webhook may see an id again, never miss one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenure_ingest::validate::{Typed, ValidEvent};
use tenure_live::{Live, LiveEvent, Prop, Transition};
use tenure_schema::DeclaredProperty;

/// Where transitions go (`--emit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `ndjson:<path>`: one JSON line per transition, appended and fsynced.
    Ndjson(PathBuf),
    /// `webhook:<url>`: a POST per transition, retried with backoff.
    Webhook(String),
    /// `store`: transitions become events (`segment_entered` /
    /// `segment_exited`) of the store, through the WAL.
    Store,
}

impl std::str::FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "store" {
            return Ok(SinkSpec::Store);
        }
        if let Some(p) = s.strip_prefix("ndjson:").filter(|p| !p.is_empty()) {
            return Ok(SinkSpec::Ndjson(PathBuf::from(p)));
        }
        if let Some(u) = s.strip_prefix("webhook:") {
            if u.starts_with("http://") || u.starts_with("https://") {
                return Ok(SinkSpec::Webhook(u.to_string()));
            }
            return Err(format!(
                "webhook sink `{s}`: the URL must start with http:// or https://"
            ));
        }
        Err(format!(
            "unknown sink `{s}`; use ndjson:<path>, webhook:<url> or store"
        ))
    }
}

impl SinkSpec {
    /// A file-name-safe name for the sink's progress record.
    fn key(&self) -> String {
        let text = match self {
            SinkSpec::Ndjson(p) => format!("ndjson:{}", p.display()),
            SinkSpec::Webhook(u) => format!("webhook:{u}"),
            SinkSpec::Store => "store".into(),
        };
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
    }
}

/// How an event property the plan wants is found on a validated event.
#[derive(Debug, Clone)]
enum Want {
    Revenue,
    Variant,
    Declared(usize),
    Json(String),
}

/// The live part of the server.
pub(crate) struct LiveApp {
    pub live: Mutex<Live>,
    /// Some wanted property is a key of the `properties` JSON.
    pub needs_json: bool,
    pub read_keys: Vec<Vec<u8>>,
    wanted: Vec<(String, Want)>,
    tx: Mutex<Option<mpsc::Sender<ToJournal>>>,
    /// The WAL records applied (locked while the live state is, so that a
    /// checkpoint's coverage is its state's).
    pub coverage: Mutex<crate::checkpoint::Coverage>,
    /// This process's WAL writer id.
    pub writer: u128,
    /// Set once the live state is built: what checkpoints record.
    pub checkpoints: std::sync::OnceLock<crate::checkpoint::Context>,
    /// The journal's state, once the sinks run (shutdown tells them).
    sinks: Mutex<Option<Arc<Shared>>>,
    /// Wakes the timer and checkpoint threads (shutdown).
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

/// The current time, UTC microseconds.
pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl LiveApp {
    pub fn new(
        live: Live,
        read_keys: Vec<Vec<u8>>,
        declared: &[DeclaredProperty],
        writer: u128,
    ) -> LiveApp {
        let wanted: Vec<(String, Want)> = live
            .plan()
            .wanted_properties()
            .map(|name| {
                let want = match name {
                    "revenue" => Want::Revenue,
                    "variant" => Want::Variant,
                    n => match declared.iter().position(|d| d.name == n) {
                        Some(i) => Want::Declared(i),
                        None => Want::Json(n.to_string()),
                    },
                };
                (name.to_string(), want)
            })
            .collect();
        let needs_json = wanted.iter().any(|(_, w)| matches!(w, Want::Json(_)));
        LiveApp {
            needs_json,
            live: Mutex::new(live),
            read_keys,
            wanted,
            tx: Mutex::new(None),
            coverage: Mutex::new(Default::default()),
            writer,
            checkpoints: std::sync::OnceLock::new(),
            sinks: Mutex::new(None),
            stop: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
        }
    }

    /// The live event of a validated event.
    pub fn event_of(&self, ev: &ValidEvent<'_>) -> LiveEvent {
        let mut props = Vec::new();
        let mut json: Option<HashMap<String, Box<serde_json::value::RawValue>>> = None;
        for (name, want) in &self.wanted {
            let value = match want {
                Want::Revenue => ev.revenue.map(|c| Prop::Exact(c, 2)),
                Want::Variant => ev.variant.as_ref().map(|v| Prop::Text(v.to_string())),
                Want::Declared(i) => match ev.declared.get(*i) {
                    Some(Typed::Str(s)) => Some(Prop::Text(s.to_string())),
                    Some(Typed::Int(n)) => Some(Prop::Exact(*n as i128, 0)),
                    Some(Typed::Float(x)) => Some(Prop::Float(*x)),
                    Some(Typed::Bool(b)) => Some(Prop::Bool(*b)),
                    Some(Typed::Micros(t)) => Some(Prop::Time(*t)),
                    Some(Typed::Decimal(d)) => Some(Prop::Exact(*d, 2)),
                    Some(Typed::Null) | None => None,
                },
                Want::Json(key) => {
                    let map = json.get_or_insert_with(|| {
                        serde_json::from_str(&ev.properties).unwrap_or_default()
                    });
                    map.get(key).and_then(|raw| raw_prop(raw))
                }
            };
            if let Some(v) = value {
                props.push((name.clone(), v));
            }
        }
        LiveEvent {
            user_id: ev.user_id.to_string(),
            event: ev.event.to_string(),
            ts: ev.ts,
            props,
        }
    }

    /// Applies the acknowledged events of one request (WAL records
    /// `seqs.0..=seqs.1`), received now (the clock read under the lock, so
    /// no evaluation is dated before one that another thread already made).
    pub fn apply(&self, events: Vec<LiveEvent>, seqs: (u64, u64)) {
        self.locked(|live, out| {
            live.apply_all(events, now_micros(), out);
            self.covered(seqs);
        });
    }

    /// Records WAL records as applied (or as holding nothing to apply).
    pub fn covered(&self, seqs: (u64, u64)) {
        self.coverage
            .lock()
            .expect("coverage")
            .add(self.writer, seqs.0, seqs.1);
    }

    /// Runs `f` on the locked live state and hands the transitions it made
    /// to the journal before unlocking: the journal's order is the order
    /// they were made in, whichever thread made them.
    pub fn locked<R>(&self, f: impl FnOnce(&mut Live, &mut Vec<Transition>) -> R) -> R {
        let mut out = Vec::new();
        let mut live = self.live.lock().expect("live state");
        let r = f(&mut live, &mut out);
        if !out.is_empty()
            && let Some(tx) = self.tx.lock().expect("sink channel").as_ref()
        {
            let _ = tx.send(ToJournal::Batch(out));
        }
        drop(live);
        r
    }

    /// Sends a checkpoint's mark to the journal thread (call with the live
    /// state locked). `false`: the journal is closed.
    pub fn mark(&self, m: ToJournal) -> bool {
        match self.tx.lock().expect("sink channel").as_ref() {
            Some(tx) => tx.send(m).is_ok(),
            None => false,
        }
    }

    /// Stops the timer thread (join it before [`LiveApp::finish`], so that
    /// what it evaluated last reaches the journal).
    pub fn close(&self) {
        *self.stop.0.lock().expect("stop flag") = true;
        self.stop.1.notify_all();
    }

    /// Tells the journal and the sinks that the server is stopping: a
    /// failing one gives up (its progress stays) instead of retrying.
    pub fn stopping(&self) {
        if let Some(shared) = self.sinks.lock().expect("sinks").as_ref() {
            shared
                .stopping
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Closes the journal's channel: the journal thread writes what was
    /// sent, then the sinks deliver it (a failing one gives up, to resume
    /// at the next start).
    pub fn finish(&self) {
        self.stopping();
        self.tx.lock().expect("sink channel").take();
    }
}

/// Writes a checkpoint now (if the live state has its context), saying what
/// it did or why it could not.
pub(crate) fn checkpoint_now(app: &LiveApp) {
    let Some(ctx) = app.checkpoints.get() else {
        return;
    };
    match crate::checkpoint::write(app, ctx) {
        Ok(w) => eprintln!(
            "tenure-server: live checkpoint: {} user(s), {:.1} MB in {:.2} s (live evaluation paused {:.2} s)",
            w.users,
            w.bytes as f64 / 1e6,
            w.total.as_secs_f64(),
            w.locked.as_secs_f64()
        ),
        Err(e) => eprintln!("tenure-server: live checkpoint failed (the previous one stays): {e}"),
    }
}

/// Writes checkpoints every [`crate::checkpoint::Context::every`] until
/// stopped, and sooner when the kept WAL segments have grown by
/// [`crate::checkpoint::Context::kept_limit`]; one at once when the state was
/// folded from the store (so the next start need not fold it again).
pub(crate) fn run_checkpoints(app: Arc<LiveApp>, at_once: bool) {
    let Some(ctx) = app.checkpoints.get() else {
        return;
    };
    let Some(every) = ctx.every else {
        return;
    };
    let kept = ctx.kept_dir();
    let tick = every.min(Duration::from_secs(1));
    let mut last = std::time::Instant::now();
    // What a checkpoint could not delete (segments with records it lacks)
    // does not count towards the next one.
    let mut left = crate::checkpoint::kept_bytes(&kept);
    let mut due = at_once;
    loop {
        if !due {
            let (lock, cv) = &*app.stop;
            let stopped = lock.lock().expect("stop flag");
            let (stopped, _) = cv
                .wait_timeout_while(stopped, tick, |s| !*s)
                .expect("stop flag");
            if *stopped {
                return;
            }
            due = last.elapsed() >= every
                || crate::checkpoint::kept_bytes(&kept).saturating_sub(left) > ctx.kept_limit;
            if !due {
                continue;
            }
        }
        checkpoint_now(&app);
        last = std::time::Instant::now();
        left = crate::checkpoint::kept_bytes(&kept);
        due = false;
    }
}

/// Fires due timers until stopped; sleeps at most `tick` between looks.
pub(crate) fn run_timers(app: Arc<LiveApp>, tick: Duration) {
    loop {
        let next = app.locked(|live, out| {
            live.advance(now_micros(), out);
            live.next_due()
        });
        let wait = next
            .map(|d| Duration::from_micros(d.saturating_sub(now_micros()).max(0) as u64))
            .unwrap_or(tick)
            .min(tick);
        let (lock, cv) = &*app.stop;
        let stopped = lock.lock().expect("stop flag");
        if *stopped {
            return;
        }
        let (stopped, _) = cv.wait_timeout(stopped, wait).expect("stop flag");
        if *stopped {
            return;
        }
    }
}

/// The transition journal: appended and fsynced by the journal thread,
/// read by one thread per sink from that sink's recorded progress. A sink
/// that falls behind (a webhook that is down) keeps its backlog on disk, not
/// in memory, and holds up no other sink.
pub(crate) struct Sinks {
    dir: PathBuf,
    journal: File,
    journal_len: u64,
    shared: Arc<Shared>,
}

/// The journal's length as fsynced, and whether it is closed (shutdown).
pub(crate) struct Shared {
    state: Mutex<(u64, bool)>,
    grown: std::sync::Condvar,
    /// The server is stopping: a failing sink gives up (its progress stays).
    pub stopping: std::sync::atomic::AtomicBool,
}

/// A place transitions are delivered to, in journal order.
pub(crate) trait Sink: Send {
    /// The sink as given on the command line.
    fn spec(&self) -> &SinkSpec;
    /// Delivers lines (one transition JSON each). Returns once they are
    /// delivered as far as the sink can promise (fsynced, durable in the WAL,
    /// accepted by the webhook or dead-lettered).
    fn deliver(&mut self, lines: &[String]) -> Result<(), String>;
    /// What to record beside the journal offset (the NDJSON file's length).
    fn mark(&self) -> u64 {
        0
    }
    /// Called at start with the recorded mark, before any delivery.
    fn restore(&mut self, _mark: Option<u64>) -> Result<(), String> {
        Ok(())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Lines of the journal read at a time by a sink.
const SINK_READ: usize = 4 << 20;

impl Sinks {
    /// Opens the journal under `dir` (dropping a torn last line: it was never
    /// fsynced, so no sink has it).
    pub fn open(dir: &Path) -> Result<Sinks, String> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("journal.ndjson");
        let journal = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let len = journal.metadata().map_err(io(&path))?.len();
        let good = last_newline(&path, len)?;
        if good < len {
            journal.set_len(good).map_err(io(&path))?;
        }
        Ok(Sinks {
            dir: dir.to_path_buf(),
            journal,
            journal_len: good,
            shared: Arc::new(Shared {
                state: Mutex::new((good, false)),
                grown: std::sync::Condvar::new(),
                stopping: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// What the sink threads share with the journal thread.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Starts a sink's thread: from its recorded progress (a new sink from
    /// the journal's current end) to the end of the journal, then as it
    /// grows, until the journal closes and everything in it is delivered.
    pub fn start_sink(
        &self,
        mut sink: Box<dyn Sink>,
    ) -> Result<std::thread::JoinHandle<()>, String> {
        let dir = self.dir.clone();
        let shared = self.shared.clone();
        let (offset, mark) = read_progress(&dir, sink.spec());
        sink.restore(mark)?;
        let mut offset = offset.unwrap_or(self.journal_len).min(self.journal_len);
        write_progress(&dir, sink.spec(), offset, sink.mark())?;
        let path = dir.join("journal.ndjson");
        let mut file = File::open(&path).map_err(io(&path))?;
        std::thread::Builder::new()
            .name("tenure-live-sink".into())
            .spawn(move || {
                let mut delays = Vec::new();
                let mut buf = Vec::new();
                let mut read_size = SINK_READ;
                loop {
                    let (len, closed) = {
                        let mut st = shared.state.lock().expect("journal state");
                        while st.0 <= offset && !st.1 {
                            st = shared.grown.wait(st).expect("journal state");
                        }
                        *st
                    };
                    if len <= offset && closed {
                        break;
                    }
                    let want = ((len - offset) as usize).min(read_size);
                    buf.resize(want, 0);
                    let read = file
                        .seek(SeekFrom::Start(offset))
                        .and_then(|_| file.read_exact(&mut buf));
                    if let Err(e) = read {
                        eprintln!("tenure-server: live sink {:?}: {}", sink.spec(), io(&path)(e));
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                    // Whole lines only (a read may end inside a long one).
                    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
                        // A line longer than the read: read more at once.
                        read_size *= 2;
                        continue;
                    };
                    read_size = SINK_READ;
                    let lines: Vec<String> = buf[..end]
                        .split(|&b| b == b'\n')
                        .map(|l| String::from_utf8_lossy(l).into_owned())
                        .collect();
                    let mut delay = Duration::from_millis(50);
                    let mut delivered = false;
                    loop {
                        // Delivered once; then its progress, retried alone.
                        let done = if delivered {
                            Ok(())
                        } else {
                            sink.deliver(&lines)
                        }
                        .and_then(|()| {
                            delivered = true;
                            write_progress(&dir, sink.spec(), offset + end as u64 + 1, sink.mark())
                        });
                        match done {
                            Ok(()) => break,
                            Err(e) if shared.stopping.load(std::sync::atomic::Ordering::Relaxed) => {
                                eprintln!(
                                    "tenure-server: live sink {:?}: {e}; stopping with transitions left, delivered at the next start",
                                    sink.spec()
                                );
                                report_delays(sink.spec(), &mut delays);
                                return;
                            }
                            Err(e) => {
                                eprintln!("tenure-server: live sink {:?}: {e}; retrying", sink.spec());
                                std::thread::sleep(delay);
                                delay = (delay * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                    let now = now_micros();
                    if delays.len() < 10_000_000 {
                        delays.extend(lines.iter().filter_map(|l| line_at(l)).map(|at| now - at));
                    }
                    offset += end as u64 + 1;
                }
                report_delays(sink.spec(), &mut delays);
            })
            .map_err(|e| e.to_string())
    }

    /// Is there a baseline (has a server with live segments started here)?
    pub fn has_baseline(dir: &Path) -> bool {
        dir.join("baseline.ndjson").exists()
    }

    /// Records the membership of a first start (`{"user_id", "segment"}` per
    /// member), which the journal's transitions then continue.
    pub fn write_baseline(dir: &Path, live: &Live) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("baseline.ndjson");
        let tmp = dir.join("baseline.tmp");
        let mut f = std::io::BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
        for (i, s) in live.plan().segments().iter().enumerate() {
            let segment = serde_json::to_string(&s.name).unwrap_or_default();
            let mut failed = None;
            live.for_each_member(i, |u| {
                let user = serde_json::to_string(u).unwrap_or_default();
                if let Err(e) = writeln!(f, r#"{{"user_id":{user},"segment":{segment}}}"#) {
                    failed.get_or_insert(e);
                }
            });
            if let Some(e) = failed {
                return Err(io(&tmp)(e));
            }
        }
        let f = f.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    }

    /// The last membership sinks were told of, per user: which segments
    /// lines were read for (mask) and the membership they last said (bits).
    /// `from: None` reads the baseline, then the whole journal; `Some(n)`
    /// the journal from byte `n` (a checkpoint's), which must exist.
    pub fn journal_membership(
        dir: &Path,
        segments: &[String],
        from: Option<u64>,
    ) -> Result<HashMap<String, (u64, u64)>, String> {
        let mut out: HashMap<String, (u64, u64)> = HashMap::new();
        let mut set = |user: &str, segment: &str, member: bool| {
            if let Some(i) = segments.iter().position(|s| s == segment) {
                let (mask, bits) = match out.get_mut(user) {
                    Some(b) => b,
                    None => out.entry(user.to_string()).or_default(),
                };
                *mask |= 1 << i;
                if member {
                    *bits |= 1 << i;
                } else {
                    *bits &= !(1 << i);
                }
            }
        };
        #[derive(serde::Deserialize)]
        struct Line<'a> {
            #[serde(borrow)]
            user_id: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            segment: std::borrow::Cow<'a, str>,
            #[serde(rename = "type", default)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        let base = dir.join("baseline.ndjson");
        if from.is_none()
            && let Ok(f) = File::open(&base)
        {
            for line in BufReader::new(f).lines() {
                let line = line.map_err(io(&base))?;
                if let Ok(v) = serde_json::from_str::<Line<'_>>(&line) {
                    set(&v.user_id, &v.segment, true);
                }
            }
        }
        let path = dir.join("journal.ndjson");
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(_) if from.is_none() => return Ok(out),
            Err(e) => return Err(io(&path)(e)),
        };
        if let Some(n) = from {
            let len = f.metadata().map_err(io(&path))?.len();
            if len < n {
                return Err(format!(
                    "{} is {len} bytes, shorter than the {n} the checkpoint recorded",
                    path.display()
                ));
            }
            f.seek(SeekFrom::Start(n)).map_err(io(&path))?;
        }
        for line in BufReader::new(f).lines() {
            let line = line.map_err(io(&path))?;
            if let Ok(Line {
                user_id,
                segment,
                kind: Some(kind),
            }) = serde_json::from_str::<Line<'_>>(&line)
            {
                set(&user_id, &segment, kind == "segment_entered");
            }
        }
        Ok(out)
    }

    /// Journals a batch (appended and fsynced).
    pub fn journal(&mut self, lines: &[String]) -> Result<(), String> {
        let mut buf = String::new();
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        let path = self.dir.join("journal.ndjson");
        if let Err(e) = self
            .journal
            .write_all(buf.as_bytes())
            .and_then(|()| self.journal.sync_data())
        {
            // Nothing of a failed append may stay: a retry appends it again.
            let _ = self.journal.set_len(self.journal_len);
            return Err(io(&path)(e));
        }
        self.journal_len += buf.len() as u64;
        self.shared.state.lock().expect("journal state").0 = self.journal_len;
        self.shared.grown.notify_all();
        Ok(())
    }

    /// Closes the journal: sink threads deliver what it holds, then stop.
    fn close(&self) {
        self.shared.state.lock().expect("journal state").1 = true;
        self.shared.grown.notify_all();
    }
}

/// The offset just past the journal's last newline (its whole lines).
fn last_newline(path: &Path, len: u64) -> Result<u64, String> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(chunk))
            .map_err(io(path))?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// A transition line's `at`, UTC microseconds.
fn line_at(line: &str) -> Option<i64> {
    let i = line.find(r#""at":""#)? + 6;
    let end = i + line[i..].find('"')?;
    chrono::DateTime::parse_from_rfc3339(&line[i..end])
        .ok()
        .map(|d| d.timestamp_micros())
}

/// Prints a sink's delays from each transition's instant (the event's
/// acknowledgement or the due time) to its delivery.
fn report_delays(spec: &SinkSpec, delays: &mut [i64]) {
    if delays.is_empty() {
        return;
    }
    delays.sort_unstable();
    let q = |p: f64| delays[((delays.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    eprintln!(
        "tenure-server: live: {} transition(s) delivered to {spec:?}; from the event's acknowledgement or the due time to delivery: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delays.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
}

fn progress_path(dir: &Path, spec: &SinkSpec) -> PathBuf {
    dir.join(format!("{}.progress", spec.key()))
}

fn read_progress(dir: &Path, spec: &SinkSpec) -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string(progress_path(dir, spec)) else {
        return (None, None);
    };
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
    (it.next().flatten(), it.next().flatten())
}

/// Records a sink's progress atomically (write, fsync, rename).
fn write_progress(dir: &Path, spec: &SinkSpec, offset: u64, mark: u64) -> Result<(), String> {
    let path = progress_path(dir, spec);
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(format!("{offset} {mark}\n").as_bytes())
        .map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// `ndjson:<path>`.
pub(crate) struct NdjsonSink {
    spec: SinkSpec,
    path: PathBuf,
    file: File,
    len: u64,
}

impl NdjsonSink {
    pub fn open(path: &Path) -> Result<NdjsonSink, String> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        Ok(NdjsonSink {
            spec: SinkSpec::Ndjson(path.to_path_buf()),
            path: path.to_path_buf(),
            file,
            len,
        })
    }
}

impl Sink for NdjsonSink {
    fn spec(&self) -> &SinkSpec {
        &self.spec
    }

    fn deliver(&mut self, lines: &[String]) -> Result<(), String> {
        let mut buf = String::new();
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        if let Err(e) = self
            .file
            .write_all(buf.as_bytes())
            .and_then(|()| self.file.sync_data())
        {
            // Nothing of a failed append may stay: the retry writes it again.
            let _ = self.file.set_len(self.len);
            return Err(io(&self.path)(e));
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    fn mark(&self) -> u64 {
        self.len
    }

    fn restore(&mut self, mark: Option<u64>) -> Result<(), String> {
        // Lines appended after the last recorded progress are written again
        // from the journal: cut them (a crash between the two).
        if let Some(m) = mark
            && m < self.len
        {
            self.file.set_len(m).map_err(io(&self.path))?;
            self.file.sync_data().map_err(io(&self.path))?;
            self.file.seek(SeekFrom::End(0)).map_err(io(&self.path))?;
            self.len = m;
        }
        Ok(())
    }
}

/// Runs the journal thread: appends each batch of transitions (retried with
/// backoff on failure: later batches wait behind it), then closes the
/// journal once the channel closes, so that the sink threads finish.
pub(crate) fn run_journal(mut sinks: Sinks, rx: mpsc::Receiver<ToJournal>) {
    // A batch given up on (at shutdown): no later mark may vouch for the
    // journal holding every transition made before it.
    let mut gave_up = false;
    let mut next = rx.recv().ok();
    while let Some(first) = next.take() {
        let mut batch = match first {
            ToJournal::Batch(b) => b,
            ToJournal::Mark(reply) => {
                let _ = reply.send((!gave_up).then_some(sinks.journal_len));
                next = rx.recv().ok();
                continue;
            }
        };
        // Group what is already waiting, up to a mark: one fsync for all.
        loop {
            match rx.try_recv() {
                Ok(ToJournal::Batch(more)) => batch.extend(more),
                Ok(mark) => {
                    next = Some(mark);
                    break;
                }
                Err(_) => break,
            }
        }
        let lines: Vec<String> = batch.iter().map(|t| t.to_json().to_string()).collect();
        let mut delay = Duration::from_millis(50);
        while let Err(e) = sinks.journal(&lines) {
            if sinks
                .shared
                .stopping
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                // What changed is found again at the next start (against the
                // journal) and emitted then.
                eprintln!(
                    "tenure-server: live transitions: {e}; stopping without journaling {} of them",
                    lines.len()
                );
                gave_up = true;
                break;
            }
            eprintln!("tenure-server: live transitions: {e}; retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        if next.is_none() {
            next = rx.recv().ok();
        }
    }
    sinks.close();
}

/// What the journal thread receives: transitions in the order they were
/// made, and checkpoints' marks (answered with the journal's length once
/// everything before the mark is in it, `None` if some of that was lost).
pub(crate) enum ToJournal {
    Batch(Vec<Transition>),
    Mark(mpsc::SyncSender<Option<u64>>),
}

impl LiveApp {
    /// Connects the journal thread's channel and the sinks' shared state.
    pub fn connect(&self, tx: mpsc::Sender<ToJournal>, sinks: Arc<Shared>) {
        *self.tx.lock().expect("sink channel") = Some(tx);
        *self.sinks.lock().expect("sinks") = Some(sinks);
    }
}

/// `store`: each transition becomes a `segment_entered` / `segment_exited`
/// track event of the user, dated at `at`, with the transition id as its
/// `messageId` (so the store keeps it once), written through the WAL like any
/// acknowledged event. Its properties: `segment`, `transition_id` and the
/// features.
pub(crate) struct StoreSink {
    spec: SinkSpec,
    wal: Arc<crate::wal::Wal>,
    rt: tokio::runtime::Handle,
    /// Its records hold nothing the live state applies: marked applied, so
    /// that the checkpoints' coverage has no gaps for them.
    app: Arc<LiveApp>,
}

impl StoreSink {
    pub fn new(
        wal: Arc<crate::wal::Wal>,
        rt: tokio::runtime::Handle,
        app: Arc<LiveApp>,
    ) -> StoreSink {
        StoreSink {
            spec: SinkSpec::Store,
            wal,
            rt,
            app,
        }
    }
}

/// The Segment track message of a transition line.
fn store_message(line: &str) -> Option<(String, i64, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let id = v["id"].as_str()?.to_string();
    let at = chrono::DateTime::parse_from_rfc3339(v["at"].as_str()?)
        .ok()?
        .timestamp_micros();
    let msg = serde_json::json!({
        "type": "track",
        "event": v["type"],
        "userId": v["user_id"],
        "messageId": id,
        "timestamp": v["at"],
        "properties": {
            "segment": v["segment"],
            "transition_id": id,
            "features": v["features"],
        },
    });
    Some((id, at, msg.to_string()))
}

impl Sink for StoreSink {
    fn spec(&self) -> &SinkSpec {
        &self.spec
    }

    fn deliver(&mut self, lines: &[String]) -> Result<(), String> {
        let msgs: Vec<(String, i64, String)> =
            lines.iter().filter_map(|l| store_message(l)).collect();
        let events: Vec<crate::message::Accepted<'_>> = msgs
            .iter()
            .map(|(id, at, json)| crate::message::Accepted {
                ts: *at,
                id: std::borrow::Cow::Borrowed(id),
                dedup: Some(xxhash_rust::xxh3::xxh3_64(id.as_bytes())),
                kind: 0,
                json,
                live: None,
            })
            .collect();
        for chunk in events.chunks(1000) {
            let ticket = self
                .wal
                .submit(chunk, chrono::Utc::now().timestamp())
                .map_err(|e| format!("store sink: the WAL refused transitions: {e:?}"))?;
            let seqs = ticket.seqs;
            self.rt
                .block_on(ticket.durable())
                .map_err(|f| format!("store sink: {}", f.message))?;
            self.app.covered(seqs);
        }
        Ok(())
    }
}

/// `webhook:<url>`: one POST per transition (the JSON record as body, its id
/// in an `Idempotency-Key` header), retried with exponential backoff; after
/// `attempts` failures the transition goes to `dead-letters.ndjson` beside
/// the journal with the last error, and delivery moves on.
pub(crate) struct WebhookSink {
    spec: SinkSpec,
    url: String,
    client: reqwest::Client,
    rt: tokio::runtime::Handle,
    attempts: u32,
    backoff: Duration,
    dead: PathBuf,
    shared: Arc<Shared>,
}

impl WebhookSink {
    pub fn new(
        url: &str,
        dir: &Path,
        rt: tokio::runtime::Handle,
        shared: Arc<Shared>,
    ) -> Result<WebhookSink, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("webhook sink: {e}"))?;
        Ok(WebhookSink {
            spec: SinkSpec::Webhook(url.to_string()),
            url: url.to_string(),
            client,
            rt,
            attempts: 6,
            backoff: Duration::from_millis(100),
            dead: dir.join("dead-letters.ndjson"),
            shared,
        })
    }

    async fn post(&self, line: &str, id: &str) -> Result<(), String> {
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("idempotency-key", id)
            .body(line.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

impl Sink for WebhookSink {
    fn spec(&self) -> &SinkSpec {
        &self.spec
    }

    fn deliver(&mut self, lines: &[String]) -> Result<(), String> {
        for line in lines {
            let id = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_string))
                .unwrap_or_default();
            let mut delay = self.backoff;
            let mut last = String::new();
            let mut delivered = false;
            let stopping = || {
                self.shared
                    .stopping
                    .load(std::sync::atomic::Ordering::Relaxed)
            };
            for attempt in 0..self.attempts {
                if attempt > 0 && stopping() {
                    // Not given up on: delivered from the journal at the next start.
                    return Err(format!("{last} (server stopping)"));
                }
                if attempt > 0 {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                match self.rt.block_on(self.post(line, &id)) {
                    Ok(()) => {
                        delivered = true;
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            if !delivered {
                let record = serde_json::json!({
                    "sink": self.url,
                    "error": last,
                    "attempts": self.attempts,
                    "transition": serde_json::from_str::<serde_json::Value>(line).unwrap_or_default(),
                });
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.dead)
                    .map_err(io(&self.dead))?;
                f.write_all(format!("{record}\n").as_bytes())
                    .and_then(|()| f.sync_data())
                    .map_err(io(&self.dead))?;
                eprintln!(
                    "tenure-server: webhook {}: transition {id} failed {} times ({last}); written to {}",
                    self.url,
                    self.attempts,
                    self.dead.display()
                );
            }
        }
        Ok(())
    }
}

/// A batch of stored events with the columns the live state reads, text
/// columns already plain Utf8 (decoded by the reading thread).
struct Prepared {
    users: arrow_array::ArrayRef,
    events: arrow_array::ArrayRef,
    ts: arrow_array::ArrayRef,
    /// Per wanted property: its typed column, if the store has one.
    typed: Vec<Option<arrow_array::ArrayRef>>,
    properties: Option<arrow_array::ArrayRef>,
}

/// Reads the store's committed events into the live state (start-up), the
/// columns the plan needs only: one thread fetches and decodes files while
/// the caller's applies their rows. Returns the number of events read.
pub(crate) fn load_store(
    store: &tenure_ingest::Store,
    files: &[tenure_schema::FileEntry],
    live: &mut Live,
    declared: &[DeclaredProperty],
    now: i64,
    rt: &tokio::runtime::Handle,
) -> Result<u64, String> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;

    // Each file's places (its path, its staged path, its retired path): a
    // commit or compaction running meanwhile may move it from one to another.
    let paths: Vec<Vec<String>> = files.iter().map(tenure_store::file_locations).collect();
    let wanted: Vec<String> = live
        .plan()
        .wanted_properties()
        .map(str::to_string)
        .collect();
    let needs_json = wanted
        .iter()
        .any(|w| w != "revenue" && w != "variant" && !declared.iter().any(|d| &d.name == w));
    let (tx, rx) = mpsc::sync_channel::<Result<Prepared, String>>(4);
    let reader = {
        let (store, wanted, rt) = (store.clone(), wanted.clone(), rt.clone());
        std::thread::Builder::new()
            .name("tenure-live-load".into())
            .spawn(move || {
                for places in paths {
                    if let Err(e) = read_file(&store, &places, &wanted, needs_json, &rt, &tx) {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            })
            .map_err(|e| e.to_string())?
    };
    let mut read = 0u64;
    let mut out = Vec::new();
    for prepared in rx {
        let b = prepared?;
        let users = b.users.as_string::<i32>();
        let events = b.events.as_string::<i32>();
        let ts =
            b.ts.as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        let props = b.properties.as_ref().and_then(|p| p.as_string_opt::<i32>());
        for row in 0..users.len() {
            out.clear();
            for (w, col) in wanted.iter().zip(&b.typed) {
                let value = match col {
                    Some(col) => prop_at(col, row),
                    None => props
                        .filter(|p| !p.is_null(row))
                        .and_then(|p| json_value(p.value(row), w)),
                };
                if let Some(v) = value {
                    out.push((w.clone(), v));
                }
            }
            live.load_parts(
                users.value(row),
                events.value(row),
                ts.value(row),
                &out,
                now,
            );
            read += 1;
        }
    }
    reader
        .join()
        .map_err(|_| "the store reader panicked".to_string())?;
    Ok(read)
}

/// Fetches and decodes one events file into prepared batches.
fn read_file(
    store: &tenure_ingest::Store,
    places: &[String],
    wanted: &[String],
    needs_json: bool,
    rt: &tokio::runtime::Handle,
    tx: &mpsc::SyncSender<Result<Prepared, String>>,
) -> Result<(), String> {
    use arrow_schema::DataType;
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let rel = &places[0];
    let err = |e: &dyn std::fmt::Display| format!("{rel}: {e}");
    let mut found = None;
    // Each place twice over: a file moved between two looks is at the next.
    for place in places.iter().chain(places) {
        let path = store.path(place);
        let got = rt.block_on(async {
            object_store::ObjectStoreExt::get(store.inner.as_ref(), &path)
                .await?
                .bytes()
                .await
        });
        match got {
            Ok(b) => {
                found = Some(b);
                break;
            }
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(err(&e)),
        }
    }
    let bytes = found.ok_or_else(|| {
        format!(
            "{rel}: a committed file is missing from the store (looked at {})",
            places.join(", ")
        )
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| err(&e))?;
    let schema = builder.parquet_schema();
    let keep: Vec<usize> = (0..schema.num_columns())
        .filter(|&i| {
            let column = schema.column(i);
            let name = column.name();
            ["user_id", "event", "ts"].contains(&name)
                || wanted.iter().any(|w| w == name)
                || (needs_json && name == "properties")
        })
        .collect();
    let mask = ProjectionMask::leaves(schema, keep);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| err(&e))?;
    let utf8 = |c: &arrow_array::ArrayRef| -> Result<arrow_array::ArrayRef, String> {
        match c.data_type() {
            DataType::Utf8 => Ok(c.clone()),
            _ => arrow_cast::cast(c, &DataType::Utf8).map_err(|e| err(&e)),
        }
    };
    for batch in reader {
        let batch = batch.map_err(|e| err(&e))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| format!("{rel}: no {name} column"))
        };
        let typed = wanted
            .iter()
            .map(
                |w| match batch.column_by_name(w).filter(|_| w != "properties") {
                    None => Ok(None),
                    Some(c) => match c.data_type() {
                        DataType::Dictionary(..) | DataType::Utf8View | DataType::LargeUtf8 => {
                            utf8(c).map(Some)
                        }
                        _ => Ok(Some(c.clone())),
                    },
                },
            )
            .collect::<Result<Vec<_>, String>>()?;
        let prepared = Prepared {
            users: utf8(&column("user_id")?)?,
            events: utf8(&column("event")?)?,
            ts: column("ts")?,
            typed,
            properties: batch.column_by_name("properties").map(&utf8).transpose()?,
        };
        if tx.send(Ok(prepared)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The store sink's own events (`segment_entered` / `segment_exited`): not
/// fed back into live state, at start as while serving (live features would
/// otherwise move with their own transitions).
fn is_transition_event(event: &str) -> bool {
    event == "segment_entered" || event == "segment_exited"
}

/// A JSON object's value at `key`, as `prop()` reads it.
fn json_value(json: &str, key: &str) -> Option<Prop> {
    let map: HashMap<String, Box<serde_json::value::RawValue>> = serde_json::from_str(json).ok()?;
    raw_prop(map.get(key)?)
}

/// A `properties` value as the engine's `prop()` reads it: strings unquoted,
/// other values as written, `null` absent.
fn raw_prop(raw: &serde_json::value::RawValue) -> Option<Prop> {
    let raw = raw.get();
    match raw.as_bytes().first()? {
        b'n' => None,
        b'"' => serde_json::from_str::<String>(raw).ok().map(Prop::Json),
        _ => Some(Prop::Json(raw.to_string())),
    }
}

/// A typed column's value at a row.
fn prop_at(col: &arrow_array::ArrayRef, row: usize) -> Option<Prop> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::DataType;
    if col.is_null(row) {
        return None;
    }
    Some(match col.data_type() {
        DataType::Decimal128(_, s) => {
            Prop::Exact(col.as_primitive::<Decimal128Type>().value(row), *s as u32)
        }
        DataType::Int64 => Prop::Exact(col.as_primitive::<Int64Type>().value(row) as i128, 0),
        DataType::Float64 => Prop::Float(col.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Prop::Bool(col.as_boolean().value(row)),
        DataType::Timestamp(..) => {
            Prop::Time(col.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        DataType::Utf8 => Prop::Text(col.as_string::<i32>().value(row).to_string()),
        _ => {
            let text = arrow_cast::cast(&col.slice(row, 1), &DataType::Utf8).ok()?;
            Prop::Text(text.as_string::<i32>().value(0).to_string())
        }
    })
}

/// Reads acknowledged events of WAL segments into the live state at
/// start-up: segments not yet committed (those the snapshot's sources name
/// are skipped: read from the store), or committed ones kept for a
/// checkpoint (`snapshot` `None`). Records `skip` covers (held by the
/// checkpoint the state was read from) are skipped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_wal(
    app: &LiveApp,
    segments: &[crate::wal::segment::Segment],
    snapshot: Option<&tenure_schema::Snapshot>,
    skip: Option<&crate::checkpoint::Coverage>,
    declared: &[DeclaredProperty],
    ingest: &tenure_schema::IngestConfig,
    max_record: usize,
    now: i64,
) -> Result<u64, String> {
    use crate::wal::record::{RecordChunks, SEGMENT_HEADER, events};
    let names = &tenure_ingest::validate::PropertyNames::from_declared(declared);
    let bounds = tenure_ingest::validate::TimeBounds::new(ingest);
    let mut live = app.live.lock().expect("live state");
    let mut read = 0;
    for seg in segments {
        if snapshot.is_some_and(|snap| snap.sources.iter().any(|s| s.hash == seg.source_hash())) {
            continue; // committed already: read from the store
        }
        let mut file = File::open(&seg.path).map_err(io(&seg.path))?;
        file.seek(SeekFrom::Start(SEGMENT_HEADER as u64))
            .map_err(io(&seg.path))?;
        let mut chunks = RecordChunks::new(file, 4 << 20, max_record);
        while let Some(records) = chunks.next_records().map_err(io(&seg.path))? {
            for rec in records.iter().filter(|r| r.seq <= seg.last_seq) {
                if skip.is_some_and(|c| c.contains(seg.writer, rec.seq)) {
                    continue;
                }
                for ev in events(rec.payload).map_err(|e| e.to_string())? {
                    let Ok(raw) = ev.raw(names) else {
                        continue;
                    };
                    if let Ok(valid) = tenure_ingest::validate::validate(&raw, declared, bounds)
                        && !is_transition_event(&valid.event)
                    {
                        live.load(app.event_of(&valid), now);
                        read += 1;
                    }
                }
            }
        }
    }
    Ok(read)
}
