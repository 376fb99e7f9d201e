//! Parallel NDJSON decoding.
//!
//! The input is cut into pieces of whole lines ([`Chunker`]); worker threads
//! parse and validate pieces into per-day column batches; the ingest thread takes
//! the results back in input order and does only what must be sequential:
//! `event_id` dedupe and user-key assignment, both in line order, so the output
//! is identical to decoding line by line on one thread.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use tenure_schema::DeclaredProperty;

use crate::columns::EventColumns;
use crate::decode::json::{Chunker, Piece, for_each_line, handle_line};
use crate::decode::{Location, RawEvent, Sink};
use crate::timestamp::DAY_MICROS;
use crate::validate::{PropertyNames, TimeBounds, ValidEvent, validate};

/// What decoding needs, shared by the workers.
pub(crate) struct DecodeContext<'a> {
    pub input: &'a str,
    pub names: &'a PropertyNames,
    pub declared: &'a [DeclaredProperty],
    pub bounds: TimeBounds,
    pub schema: SchemaRef,
    pub ingested_at: i64,
    pub max_line: usize,
}

/// One rejected line of a piece.
pub(crate) struct Reject {
    /// Line number counted from the piece's first line (0-based).
    pub line: u64,
    pub reason: String,
    pub raw: Vec<u8>,
}

/// A decoded piece, waiting for keys.
pub(crate) struct Decoded {
    /// Lines in the piece (blank and rejected ones included).
    pub lines: u64,
    /// Accepted rows by UTC day; `user_key` is still 0.
    pub parts: Vec<(i64, RecordBatch)>,
    /// For each accepted row in line order, the index of its part (rows of one
    /// part keep their line order).
    pub order: Vec<u32>,
    /// For each accepted row in line order, the hash of its `event_id` (`None`
    /// when the id was generated here and so cannot repeat).
    pub ids: Vec<Option<u128>>,
    /// Rejected lines, in line order.
    pub rejects: Vec<Reject>,
    /// Identity merges, in line order (keys are given by the ingest thread).
    pub merges: Vec<PendingMerge>,
}

/// A merge met while decoding: its row (index in [`Decoded::order`]), and
/// `(kind, from, to, ts)` by user id.
pub(crate) type PendingMerge = (
    usize,
    (tenure_schema::identity::MergeKind, String, String, i64),
);

struct PieceSink<'c, 'a> {
    cx: &'c DecodeContext<'a>,
    days: Vec<(i64, EventColumns)>,
    last: usize,
    order: Vec<u32>,
    ids: Vec<Option<u128>>,
    rejects: Vec<Reject>,
    merges: Vec<PendingMerge>,
    first_line: u64,
}

impl Sink for PieceSink<'_, '_> {
    fn accept(&mut self, raw: &RawEvent<'_>, loc: Location<'_>, line: &[u8]) {
        let ev = match validate(raw, self.cx.declared, self.cx.bounds) {
            Ok(ev) => ev,
            Err(reason) => return self.reject(loc, &reason, line),
        };
        if let Some((kind, from)) = &ev.merge {
            self.merges.push((
                self.order.len(),
                (*kind, from.to_string(), ev.user_id.to_string(), ev.ts),
            ));
        }
        let (event_id, hash) = event_id(&ev);
        let day = ev.ts.div_euclid(DAY_MICROS);
        let part = match self.days.get(self.last) {
            Some((d, _)) if *d == day => self.last,
            _ => match self.days.iter().position(|(d, _)| *d == day) {
                Some(i) => i,
                None => {
                    self.days.push((
                        day,
                        EventColumns::new(
                            self.cx.schema.clone(),
                            self.cx.declared,
                            self.cx.ingested_at,
                        ),
                    ));
                    self.days.len() - 1
                }
            },
        };
        self.last = part;
        self.days[part].1.push(&ev, &event_id, 0);
        // A piece holds fewer than 2^32 lines, so fewer distinct days.
        self.order
            .push(u32::try_from(part).expect("fewer than 2^32 days in a piece"));
        self.ids.push(hash);
    }

    fn reject(&mut self, loc: Location<'_>, reason: &str, raw: &[u8]) {
        self.rejects.push(Reject {
            line: loc.line - self.first_line,
            reason: reason.to_string(),
            // Whole: lines longer than `max_line` never get here with more
            // than a prefix, and a piece holds a few MiB of lines at most.
            raw: raw.to_vec(),
        });
    }
}

/// The event's id and its hash for dedupe, or a fresh UUIDv7 (which cannot
/// repeat, so it has no hash) when the source had none.
pub(crate) fn event_id<'e>(ev: &'e ValidEvent<'_>) -> (Cow<'e, str>, Option<u128>) {
    match &ev.event_id {
        Some(id) => (
            Cow::Borrowed(id.as_ref()),
            Some(xxhash_rust::xxh3::xxh3_128(id.as_bytes())),
        ),
        None => (
            Cow::Owned(uuid::Uuid::now_v7().hyphenated().to_string()),
            None,
        ),
    }
}

fn decode_piece(cx: &DecodeContext<'_>, piece: &Piece) -> Decoded {
    let lines = piece.lines();
    let mut sink = PieceSink {
        cx,
        days: Vec::new(),
        last: 0,
        order: Vec::new(),
        ids: Vec::new(),
        rejects: Vec::new(),
        merges: Vec::new(),
        first_line: 1,
    };
    match piece {
        Piece::Lines(buf) => for_each_line(buf, 1, |line, n| {
            handle_line(
                line,
                Location {
                    input: cx.input,
                    line: n,
                },
                cx.names,
                cx.max_line,
                &mut sink,
            )
        }),
        Piece::TooLong => sink.reject(
            Location {
                input: cx.input,
                line: 1,
            },
            &crate::decode::too_long(cx.max_line),
            &[],
        ),
    }
    Decoded {
        lines,
        parts: sink
            .days
            .into_iter()
            .map(|(d, mut c)| (d, c.finish()))
            .collect(),
        order: sink.order,
        ids: sink.ids,
        rejects: sink.rejects,
        merges: sink.merges,
    }
}

/// Decodes NDJSON from `reader` on `workers` threads and hands each decoded
/// piece to `absorb`, in input order, with the number of its first line.
pub(crate) fn decode_ndjson<R: Read>(
    reader: R,
    cx: &DecodeContext<'_>,
    workers: usize,
    on_bytes: &mut dyn FnMut(u64),
    absorb: &mut dyn FnMut(Decoded, u64),
) -> std::io::Result<()> {
    let workers = workers.max(1);
    // Pieces queued or being decoded; bounds memory to a few pieces.
    let max_in_flight = workers * 2 + 1;
    let mut chunker = Chunker::new(reader, cx.max_line);
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = channel::<(u64, Piece)>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = channel::<(u64, Result<Decoded, String>)>();
        for i in 0..workers {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            std::thread::Builder::new()
                .name(format!("tenure-decode-{i}"))
                .spawn_scoped(scope, move || {
                    loop {
                        let job = job_rx.lock().expect("job queue").recv();
                        let Ok((seq, piece)) = job else { break };
                        // A panic here would leave the ingest thread waiting for
                        // this piece forever: report it as an error instead.
                        let decoded =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                decode_piece(cx, &piece)
                            }))
                            .map_err(|p| panic_message(&*p));
                        if done_tx.send((seq, decoded)).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn decode thread");
        }
        drop(done_tx);
        let mut order = InOrder {
            rx: done_rx,
            pending: BTreeMap::new(),
            next: 0,
            line: 1,
        };
        let mut sent = 0u64;
        let result = (|| {
            while let Some(piece) = chunker.next_piece(on_bytes)? {
                while sent - order.next >= max_in_flight as u64 {
                    order.take_one(absorb)?;
                }
                job_tx
                    .send((sent, piece))
                    .map_err(|_| std::io::Error::other("decode threads stopped"))?;
                sent += 1;
            }
            Ok(())
        })();
        drop(job_tx);
        let mut drained = Ok(());
        while drained.is_ok() && order.next < sent {
            drained = order.take_one(absorb);
        }
        result.and(drained)
    })
}

/// Decoded pieces, handed on in input order.
struct InOrder {
    rx: Receiver<(u64, Result<Decoded, String>)>,
    pending: BTreeMap<u64, Decoded>,
    next: u64,
    line: u64,
}

impl InOrder {
    /// Waits for the next piece in order and absorbs it (and any that follow it
    /// and have arrived already).
    fn take_one(&mut self, absorb: &mut dyn FnMut(Decoded, u64)) -> std::io::Result<()> {
        while !self.pending.contains_key(&self.next) {
            let (seq, d) = self
                .rx
                .recv()
                .map_err(|_| std::io::Error::other("the decode threads stopped"))?;
            let d = d.map_err(|m| std::io::Error::other(format!("decoding failed: {m}")))?;
            self.pending.insert(seq, d);
        }
        while let Some(d) = self.pending.remove(&self.next) {
            let lines = d.lines;
            absorb(d, self.line);
            self.line += lines;
            self.next += 1;
        }
        Ok(())
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a decode thread panicked".into())
}
