//! The audit log on disk: a directory of append-only segment files, `audit-<first seq>.jsonl`,
//! one record per line (see [`super::record`]), and `audit.lock`.
//!
//! Several processes append to the same log: the server and the `zorg` commands an operator
//! runs beside it (`zorg user add` records its own act). Each append takes an exclusive lock
//! on `audit.lock`, reads where the chain ends if another process wrote since, writes its
//! records and syncs them to disk before it lets go. A writer that cannot get the lock within
//! its bound fails instead of waiting for ever, so that the server can refuse what would go
//! unaudited.
//!
//! A new segment starts each UTC day and when one reaches [`MAX_SEGMENT`] bytes, so that
//! retention deletes whole files and never rewrites one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::event::Checkpoint;
use super::event::Event;
use super::record::{self, Head, Record};
use super::sign::Signer;

/// A segment is closed once it is this large (64 MiB).
pub const MAX_SEGMENT: u64 = 64 << 20;

/// The lock file's name.
const LOCK: &str = "audit.lock";

/// Bytes read from the end of a segment to find its last record (records are far smaller).
const TAIL: u64 = 256 << 10;

/// The segment files of `dir`, oldest first, with their first sequence numbers.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("audit-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("audit-{first_seq:020}.jsonl"))
}

/// The lines of a segment, each with its 1-based number; a line that is not UTF-8 comes back
/// as an error string (it cannot be a record).
pub fn lines(path: &Path) -> io::Result<impl Iterator<Item = (usize, Result<String, String>)>> {
    let mut r = BufReader::new(File::open(path)?);
    let mut n = 0;
    Ok(std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                n += 1;
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Some((
                    n,
                    String::from_utf8(buf).map_err(|_| "not UTF-8".to_owned()),
                ))
            }
            Err(e) => {
                n += 1;
                Some((n, Err(e.to_string())))
            }
        }
    }))
}

/// Every valid record of the log in `dir`, oldest first. Lines that are not valid records are
/// left out: `verify` is what names them.
pub fn records(dir: &Path) -> io::Result<Vec<Record>> {
    let mut out = Vec::new();
    for (_, p) in segments(dir)? {
        for (_, l) in lines(&p)? {
            if let Some(r) = l.ok().and_then(|l| record::parse(&l).ok()) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// The segment being appended to.
struct Segment {
    path: PathBuf,
    file: File,
    len: u64,
    /// UTC day (days since 1970) of the segment's first record.
    day: i64,
}

/// An open audit log, for appending.
pub struct Log {
    dir: PathBuf,
    lock: File,
    lock_wait: Duration,
    cur: Option<Segment>,
    head: Head,
    max_segment: u64,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("head", &self.head.seq)
            .finish()
    }
}

/// Holds `audit.lock` until dropped.
struct Locked<'a>(&'a File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn day_of(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(86_400_000)
}

fn ms_of(time: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

impl Log {
    /// Opens (making it if needed) the log in `dir`. Waits at most `lock_wait` for another
    /// writer. A torn last line left by a crash is cut off, and the returned event records it.
    pub fn open(dir: &Path, lock_wait: Duration) -> io::Result<(Log, Option<Event>)> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        let mut log = Log {
            dir: dir.to_owned(),
            lock,
            lock_wait,
            cur: None,
            head: Head::EMPTY,
            max_segment: MAX_SEGMENT,
        };
        let lock = log.lock.try_clone()?;
        let _g = Self::take_lock(&lock, lock_wait)?;
        let repaired = log.sync_tail()?;
        Ok((log, repaired))
    }

    /// Where the chain ended at the last append or open.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    #[cfg(test)]
    pub(crate) fn set_max_segment(&mut self, bytes: u64) {
        self.max_segment = bytes;
    }

    fn take_lock(lock: &File, wait: Duration) -> io::Result<Locked<'_>> {
        let deadline = Instant::now() + wait;
        loop {
            match lock.try_lock() {
                Ok(()) => return Ok(Locked(lock)),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "another process has held the audit log lock for more than {} ms",
                            wait.as_millis()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    /// Finds the end of the chain if another process wrote since we last looked (or at
    /// open), and cuts off a torn last line. Call with the lock held.
    fn sync_tail(&mut self) -> io::Result<Option<Event>> {
        let segs = segments(&self.dir)?;
        let Some((_, last)) = segs.last() else {
            self.cur = None;
            self.head = Head::EMPTY;
            return Ok(None);
        };
        if let Some(cur) = &self.cur
            && &cur.path == last
            && cur.file.metadata()?.len() == cur.len
        {
            return Ok(None);
        }
        let mut file = OpenOptions::new().read(true).append(true).open(last)?;
        let mut len = file.metadata()?.len();
        let mut repaired = None;
        let (tail, tail_start) = read_tail(&mut file, len)?;
        if !tail.is_empty() && tail.last() != Some(&b'\n') {
            // A crash in the middle of a write: the partial record was never acknowledged.
            let keep = tail
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(tail_start, |i| tail_start + i as u64 + 1);
            file.set_len(keep)?;
            file.sync_all()?;
            repaired = Some(Event::AuditRepaired {
                truncated_bytes: len - keep,
            });
            tracing::warn!(file = %last.display(), bytes = len - keep, "cut off a torn last audit record (a crash during a write)");
            len = keep;
        }
        // The chain's end: the last record of the newest segment that has one.
        let mut head = None;
        for (_, p) in segs.iter().rev() {
            if let Some(r) = last_record(p)? {
                head = Some(Head {
                    seq: r.seq,
                    hash: r.hash,
                });
                break;
            }
        }
        let day = match first_record(last)? {
            Some(r) => ms_of(&r.time).map_or(i64::MIN, day_of),
            None => day_of(record::now_ms()),
        };
        self.head = head.unwrap_or(Head::EMPTY);
        self.cur = Some(Segment {
            path: last.clone(),
            file,
            len,
            day,
        });
        Ok(repaired)
    }

    /// Appends `events` (each with its Unix-millisecond time) and, with `signer`, a signed
    /// checkpoint after them; syncs to disk before returning. Returns the new head.
    pub fn append(&mut self, events: &[(i64, Event)], signer: Option<&Signer>) -> io::Result<Head> {
        let lock = self.lock.try_clone()?;
        let _g = Self::take_lock(&lock, self.lock_wait)?;
        self.append_locked(events, signer)
    }

    fn append_locked(
        &mut self,
        events: &[(i64, Event)],
        signer: Option<&Signer>,
    ) -> io::Result<Head> {
        let repaired = self.sync_tail()?;
        let now = record::now_ms();
        let mut buf = Vec::with_capacity(256 * (events.len() + 2));
        let mut head = self.head;
        let push = |ms: i64, ev: &Event, buf: &mut Vec<u8>, head: &mut Head| {
            let seq = head.seq + 1;
            let hash = record::encode(seq, &record::timestamp(ms), &head.hash, ev, buf);
            *head = Head { seq, hash };
        };
        if let Some(r) = &repaired {
            push(now, r, &mut buf, &mut head);
        }
        for (ms, ev) in events {
            push(*ms, ev, &mut buf, &mut head);
        }
        if let Some(s) = signer {
            let time = record::timestamp(now);
            let head_hex = record::hex(&head.hash);
            let signature = s.sign(&Checkpoint::signed_bytes(head.seq, &head_hex, &time));
            let cp = Event::Checkpoint(Checkpoint {
                covers: head.seq,
                head: head_hex,
                key: s.public_key().to_owned(),
                signature,
            });
            push(now, &cp, &mut buf, &mut head);
        }
        if buf.is_empty() {
            return Ok(self.head);
        }
        self.rotate_if_due(now)?;
        let Some(cur) = self.cur.as_mut() else {
            return Err(io::Error::other("no audit segment open"));
        };
        if let Err(e) = cur.file.write_all(&buf).and_then(|()| cur.file.sync_data()) {
            // Leave no partial batch behind: the next append starts on a clean line.
            let _ = cur.file.set_len(cur.len);
            return Err(e);
        }
        cur.len += buf.len() as u64;
        self.head = head;
        Ok(head)
    }

    fn rotate_if_due(&mut self, now_ms: i64) -> io::Result<()> {
        let due = match &self.cur {
            None => true,
            Some(c) => c.len > 0 && (c.len >= self.max_segment || c.day != day_of(now_ms)),
        };
        if !due {
            return Ok(());
        }
        let path = segment_path(&self.dir, self.head.seq + 1);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        // The new name must survive a crash too.
        File::open(&self.dir)?.sync_all()?;
        self.cur = Some(Segment {
            path,
            len: file.metadata()?.len(),
            file,
            day: day_of(now_ms),
        });
        Ok(())
    }

    /// Deletes the segments whose records are all older than `before_ms`, never the newest.
    /// First appends an [`Event::AuditPruned`] that says where the remaining chain starts, so
    /// that `verify` can tell retention from removal. Returns how many segments went.
    pub fn prune(&mut self, before_ms: i64, signer: Option<&Signer>) -> io::Result<u32> {
        let lock = self.lock.try_clone()?;
        let _g = Self::take_lock(&lock, self.lock_wait)?;
        let segs = segments(&self.dir)?;
        let mut doomed = Vec::new();
        let mut through = None;
        for pair in segs.windows(2) {
            let Some(next_first) = first_record(&pair[1].1)? else {
                break;
            };
            // Every record of this segment is older than the first of the next one.
            if ms_of(&next_first.time).is_none_or(|t| t >= before_ms) {
                break;
            }
            doomed.push(pair[0].1.clone());
            through = Some((next_first.seq - 1, next_first.prev));
        }
        let Some((through_seq, through_hash)) = through else {
            return Ok(0);
        };
        let segments = doomed.len() as u32;
        let ev = Event::AuditPruned {
            through_seq,
            through_hash: record::hex(&through_hash),
            segments,
        };
        self.append_locked(&[(record::now_ms(), ev)], signer)?;
        for p in &doomed {
            std::fs::remove_file(p)?;
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(segments)
    }
}

fn read_tail(file: &mut File, len: u64) -> io::Result<(Vec<u8>, u64)> {
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    file.take(len - start).read_to_end(&mut buf)?;
    Ok((buf, start))
}

/// The last complete record of a segment (`None` if it has none).
fn last_record(path: &Path) -> io::Result<Option<Record>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let (tail, _) = read_tail(&mut f, len)?;
    let end = tail.iter().rposition(|&b| b == b'\n');
    let Some(end) = end else { return Ok(None) };
    let start = tail[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = std::str::from_utf8(&tail[start..end]).map_err(|_| bad_tail(path))?;
    record::parse(line).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: the last audit record is unreadable ({e}); run `zorg audit verify` and \
                 move the damaged segment aside to go on",
                path.display()
            ),
        )
    })
}

fn bad_tail(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: the last audit record is not UTF-8", path.display()),
    )
}

/// The first record of a segment (`None` if it is empty or its first line is not a record).
pub fn first_record(path: &Path) -> io::Result<Option<Record>> {
    let mut it = lines(path)?;
    Ok(it
        .next()
        .and_then(|(_, l)| l.ok())
        .and_then(|l| record::parse(&l).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("zorg-audit-{name}-{}", crate::storage::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ev(n: u32) -> Event {
        Event::SessionUnbound {
            session: format!("user{n}@example.org/r"),
        }
    }

    #[test]
    fn appends_continue_the_chain_across_processes_and_reopens() {
        let dir = scratch("append");
        let (mut a, _) = Log::open(&dir, Duration::from_secs(1)).unwrap();
        let h1 = a
            .append(
                &[(record::now_ms(), ev(1)), (record::now_ms(), ev(2))],
                None,
            )
            .unwrap();
        assert_eq!(h1.seq, 2);
        // A second writer (as `zorg user add` would be) sees where the chain ends.
        let (mut b, _) = Log::open(&dir, Duration::from_secs(1)).unwrap();
        assert_eq!(b.head(), h1);
        let h2 = b.append(&[(record::now_ms(), ev(3))], None).unwrap();
        // The first writer picks that up before its next append.
        let h3 = a.append(&[(record::now_ms(), ev(4))], None).unwrap();
        assert_eq!((h2.seq, h3.seq), (3, 4));
        let text = std::fs::read_to_string(&segments(&dir).unwrap()[0].1).unwrap();
        let recs: Vec<Record> = text.lines().map(|l| record::parse(l).unwrap()).collect();
        for w in recs.windows(2) {
            assert_eq!(w[1].prev, w[0].hash);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_cut_and_recorded() {
        let dir = scratch("torn");
        let (mut a, _) = Log::open(&dir, Duration::from_secs(1)).unwrap();
        a.append(&[(record::now_ms(), ev(1))], None).unwrap();
        let seg = &segments(&dir).unwrap()[0].1;
        let mut f = OpenOptions::new().append(true).open(seg).unwrap();
        f.write_all(b"{\"seq\":2,\"time\":\"20").unwrap();
        let (mut b, repaired) = Log::open(&dir, Duration::from_secs(1)).unwrap();
        assert!(matches!(
            repaired,
            Some(Event::AuditRepaired {
                truncated_bytes: 19
            })
        ));
        let h = b
            .append(&[(record::now_ms(), repaired.unwrap())], None)
            .unwrap();
        assert_eq!(h.seq, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_held_lock_makes_appends_fail_within_the_bound() {
        let dir = scratch("lock");
        let (mut a, _) = Log::open(&dir, Duration::from_millis(50)).unwrap();
        let other = File::open(dir.join(LOCK)).unwrap();
        other.lock().unwrap();
        let t = Instant::now();
        let e = a.append(&[(record::now_ms(), ev(1))], None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5));
        other.unlock().unwrap();
        assert_eq!(a.append(&[(record::now_ms(), ev(1))], None).unwrap().seq, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn full_segments_rotate_and_pruning_leaves_a_record() {
        let dir = scratch("rotate");
        let (mut a, _) = Log::open(&dir, Duration::from_secs(1)).unwrap();
        a.set_max_segment(1);
        let old = record::now_ms() - 10 * 86_400_000;
        for n in 0..3 {
            a.append(&[(old, ev(n))], None).unwrap();
        }
        assert_eq!(segments(&dir).unwrap().len(), 3);
        // Segments 1 and 2 hold only old records; the newest is never deleted.
        let gone = a.prune(record::now_ms(), None).unwrap();
        assert_eq!(gone, 2);
        let segs = segments(&dir).unwrap();
        assert_eq!(segs.len(), 2);
        let pruned = last_record(&segs[1].1).unwrap().unwrap();
        let first_left = first_record(&segs[0].1).unwrap().unwrap();
        match pruned.event {
            Event::AuditPruned {
                through_seq,
                through_hash,
                segments,
            } => {
                assert_eq!((through_seq, segments), (2, 2));
                assert_eq!(through_hash, record::hex(&first_left.prev));
            }
            e => panic!("{e:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_error_leaves_no_partial_batch() {
        // /dev/full fails every write with ENOSPC, even for root.
        let Ok(file) = OpenOptions::new().read(true).append(true).open("/dev/full") else {
            return;
        };
        let dir = scratch("full");
        let (mut a, _) = Log::open(&dir, Duration::from_secs(1)).unwrap();
        a.append(&[(record::now_ms(), ev(1))], None).unwrap();
        let good = a.cur.as_ref().unwrap().path.clone();
        // The current segment's descriptor now points at /dev/full (length 0, as recorded,
        // so the writer does not look for another writer's records).
        a.cur = Some(Segment {
            path: good,
            file,
            len: 0,
            day: day_of(record::now_ms()),
        });
        let before = a.head();
        let e = a
            .append_locked(&[(record::now_ms(), ev(2))], None)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "{e}"); // ENOSPC
        assert_eq!(a.head(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
