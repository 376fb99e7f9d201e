//! CSV with a header row. Known columns (`user_id`, `event`, `ts`, ...) map as in
//! NDJSON; every other non-empty cell becomes a string property.

use std::borrow::Cow;
use std::io::Read;

use super::{Location, RawEvent, Scalar, Sink};
use crate::validate::PropertyNames;

#[derive(Clone, Copy)]
enum Col {
    EventId,
    UserId,
    AnonymousId,
    Event,
    Kind,
    Ts,
    Property,
}

fn classify(name: &str) -> Col {
    match name {
        "event_id" | "messageId" | "message_id" => Col::EventId,
        "user_id" | "userId" => Col::UserId,
        "anonymousId" | "anonymous_id" => Col::AnonymousId,
        "event" => Col::Event,
        "type" => Col::Kind,
        "ts" | "timestamp" => Col::Ts,
        _ => Col::Property,
    }
}

/// Reads CSV; records that fail to parse are rejected with their line.
pub fn read_csv<R: Read>(
    reader: R,
    input: &str,
    names: &PropertyNames,
    max_line: usize,
    sink: &mut dyn Sink,
    on_bytes: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let headers = match rdr.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            sink.reject(
                Location { input, line: 1 },
                &format!("unreadable CSV header: {e}"),
                &[],
            );
            return Ok(());
        }
    };
    let mut header_names = Vec::with_capacity(headers.len());
    for h in headers.iter() {
        match std::str::from_utf8(h) {
            Ok(s) => header_names.push(s.trim().to_string()),
            Err(_) => {
                sink.reject(
                    Location { input, line: 1 },
                    "CSV header is not valid UTF-8",
                    h,
                );
                return Ok(());
            }
        }
    }
    let cols: Vec<Col> = header_names.iter().map(|n| classify(n)).collect();
    let mut record = csv::ByteRecord::new();
    let mut last_pos = 0u64;
    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(line);
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => {
                        format!("row has {len} fields, the header has {expected_len}")
                    }
                    _ => format!("malformed CSV: {e}"),
                };
                sink.reject(Location { input, line }, &reason, &[]);
                continue;
            }
        }
        let pos = rdr.position().byte();
        on_bytes(pos - last_pos);
        last_pos = pos;
        let line = record.position().map(|p| p.line()).unwrap_or(line);
        let loc = Location { input, line };
        let raw = record.as_slice();
        if raw.len() > max_line {
            sink.reject(loc, &super::too_long(max_line), &[]);
            continue;
        }
        let mut fields = Vec::with_capacity(record.len());
        let mut bad_utf8 = None;
        for (i, f) in record.iter().enumerate() {
            match std::str::from_utf8(f) {
                Ok(s) => fields.push(s),
                Err(e) => {
                    bad_utf8 = Some((i, e.valid_up_to()));
                    break;
                }
            }
        }
        if let Some((i, at)) = bad_utf8 {
            sink.reject(
                loc,
                &format!("invalid UTF-8 in column `{}` at byte {at}", header_names[i]),
                raw,
            );
            continue;
        }
        let mut ev = RawEvent::with_declared(names.len());
        for ((col, name), value) in cols.iter().zip(&header_names).zip(fields) {
            if value.is_empty() {
                continue;
            }
            let v = Scalar::Str(Cow::Borrowed(value));
            match col {
                Col::EventId => ev.event_id = Some(v),
                Col::UserId => ev.user_id = Some(v),
                Col::AnonymousId => ev.anonymous_id = Some(v),
                Col::Event => ev.event = Some(v),
                Col::Kind => ev.kind = Some(v),
                Col::Ts => ev.ts = Some(v),
                Col::Property => ev.set_property(names, Cow::Borrowed(name.as_str()), v),
            }
        }
        sink.accept(&ev, loc, raw);
    }
    Ok(())
}
