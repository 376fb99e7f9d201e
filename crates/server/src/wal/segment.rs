//! WAL segment files: creating them durably, and recovering them at start-up
//! (truncating a torn tail instead of refusing to start).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::record::{MAGIC, SEGMENT_HEADER, Tail, read_records};

/// A closed (or recovered) segment waiting to be committed.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub path: PathBuf,
    /// Id of the server process that wrote it.
    pub writer: u128,
    pub first_seq: u64,
    pub last_seq: u64,
    /// File size in bytes.
    pub bytes: u64,
}

impl Segment {
    /// The manifest source hash of this segment's contents: derived from the
    /// writer and sequence range only, so committing a replayed segment after a
    /// crash between commit and deletion is recognised and skipped.
    pub(crate) fn source_hash(&self) -> String {
        let key = format!(
            "tenure-server-wal:{:032x}:{}:{}",
            self.writer, self.first_seq, self.last_seq
        );
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
    }

    /// The source name recorded in the manifest.
    pub(crate) fn source_name(&self) -> String {
        format!(
            "http:wal/{:032x}/{}-{}",
            self.writer, self.first_seq, self.last_seq
        )
    }
}

/// The file name of a writer's segment starting at `first_seq`: sorting names
/// sorts segments by writer start time (UUIDv7) and then by sequence.
pub(crate) fn file_name(writer: u128, first_seq: u64) -> String {
    format!("{writer:032x}-{first_seq:020}.wal")
}

/// Creates a segment and makes both it and its directory entry durable, so a
/// record fsynced into it later cannot vanish with the directory entry.
pub(crate) fn create(dir: &Path, writer: u128, first_seq: u64) -> std::io::Result<(File, PathBuf)> {
    let path = dir.join(file_name(writer, first_seq));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let mut header = Vec::with_capacity(SEGMENT_HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&writer.to_be_bytes());
    let durable = f
        .write_all(&header)
        .and_then(|()| f.sync_all())
        .and_then(|()| sync_dir(dir));
    if let Err(e) = durable {
        // A full disk, typically: leave no headerless file behind for every
        // group that fails until space returns.
        drop(f);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((f, path))
}

/// fsyncs a directory (its entries).
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What recovery found and did.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    /// Events found in the segments (to be committed).
    pub events: u64,
    /// Dedup hashes of the client `messageId`s in them.
    pub ids: Vec<u64>,
    /// Human-readable notes: torn tails truncated, empty files removed.
    pub notes: Vec<String>,
}

/// Scans the WAL directory: every segment is checked record by record; a torn
/// tail is cut off (it was never acknowledged) and reported; segments without
/// a single whole record are removed.
pub(crate) fn recover(dir: &Path, max_record: usize) -> std::io::Result<Recovered> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    names.sort();
    let mut out = Recovered::default();
    let mut changed = false;
    for path in names {
        let data = std::fs::read(&path)?;
        let shown = path.display();
        if data.len() < SEGMENT_HEADER {
            out.notes.push(format!(
                "{shown}: removed, only {} bytes of its header were written (nothing in it was acknowledged)",
                data.len()
            ));
            std::fs::remove_file(&path)?;
            changed = true;
            continue;
        }
        if &data[..8] != MAGIC {
            let aside = path.with_extension("wal.unknown");
            out.notes.push(format!(
                "{shown}: not a Tenure WAL segment (bad magic); moved aside to {}",
                aside.display()
            ));
            std::fs::rename(&path, &aside)?;
            changed = true;
            continue;
        }
        let writer = u128::from_be_bytes(data[8..24].try_into().expect("16 bytes"));
        let (records, tail) = read_records(&data[SEGMENT_HEADER..], max_record);
        let mut events = 0u64;
        for r in &records {
            for ev in super::record::events(r.payload).map_err(std::io::Error::other)? {
                events += 1;
                if !ev.generated {
                    out.ids.push(xxhash_rust::xxh3::xxh3_64(ev.id.as_bytes()));
                }
            }
        }
        let mut len = data.len() as u64;
        if let Tail::Torn { offset, reason } = tail {
            let keep = (SEGMENT_HEADER + offset) as u64;
            out.notes.push(format!(
                "{shown}: torn tail ({reason}); dropped {} unacknowledged bytes after {} whole records",
                len - keep,
                records.len()
            ));
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(keep)?;
            f.sync_all()?;
            len = keep;
        }
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            out.notes
                .push(format!("{shown}: removed, no whole record in it"));
            std::fs::remove_file(&path)?;
            changed = true;
            continue;
        };
        out.events += events;
        out.segments.push(Segment {
            path: path.clone(),
            writer,
            first_seq: first.seq,
            last_seq: last.seq,
            bytes: len,
        });
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{RECORD_HEADER, seal};

    fn rec(seq: u64) -> Vec<u8> {
        let mut buf = vec![0u8; RECORD_HEADER];
        buf.extend_from_slice(&1i64.to_le_bytes());
        buf.push(1);
        buf.extend_from_slice(&1u16.to_le_bytes());
        buf.push(b'x');
        buf.extend_from_slice(&2u32.to_le_bytes());
        buf.extend_from_slice(b"{}");
        seal(&mut buf, seq);
        buf
    }

    #[test]
    fn recovery_truncates_torn_tail_and_removes_empty_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, path) = create(dir.path(), 7, 1).unwrap();
        f.write_all(&rec(1)).unwrap();
        f.write_all(&rec(2)).unwrap();
        let good = std::fs::metadata(&path).unwrap().len();
        f.write_all(&rec(3)[..10]).unwrap();
        drop(f);
        let (f2, path2) = create(dir.path(), 7, 9).unwrap();
        drop(f2);
        std::fs::write(dir.path().join("short.wal"), b"TNR").unwrap();

        let r = recover(dir.path(), 1 << 20).unwrap();
        assert_eq!(r.segments.len(), 1);
        let s = &r.segments[0];
        assert_eq!(
            (s.writer, s.first_seq, s.last_seq, s.bytes),
            (7, 1, 2, good)
        );
        assert_eq!(r.events, 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        assert!(!path2.exists());
        assert_eq!(r.notes.len(), 3, "{:?}", r.notes);
        assert!(r.notes.iter().any(|n| n.contains("torn tail")));
        // Recovering again changes nothing.
        let again = recover(dir.path(), 1 << 20).unwrap();
        assert_eq!(again.segments.len(), 1);
        assert!(again.notes.is_empty(), "{:?}", again.notes);
    }

    #[test]
    fn source_hash_depends_on_writer_and_range() {
        let s = |w, a, b| Segment {
            path: PathBuf::new(),
            writer: w,
            first_seq: a,
            last_seq: b,
            bytes: 0,
        };
        assert_eq!(s(1, 1, 5).source_hash(), s(1, 1, 5).source_hash());
        assert_ne!(s(1, 1, 5).source_hash(), s(2, 1, 5).source_hash());
        assert_ne!(s(1, 1, 5).source_hash(), s(1, 1, 4).source_hash());
    }
}
