//! Store-and-forward spool: labels are appended to disk before they are sent, and removed only once the
//! broker has acknowledged them, so a broker outage or a power cut loses nothing the fsync policy has synced.
//!
//! Files in the spool directory:
//! - `spool.dat`: `MIENSPL1` then records `[len u32 LE][crc32 u32 LE][seq u64 LE][payload]`, the CRC over
//!   seq and payload. Append-only; rewritten only to compact (all acknowledged, or over the size bound).
//! - `spool.state`: `acked=<seq>\ndropped=<n>\n`, replaced atomically (write, fsync, rename): on every
//!   acknowledgement under `always`, with the data file's sync under `interval` (at most every
//!   `fsync_interval_ms`), on every acknowledgement without fsync under `never`.
//!
//! Ordering rule: the data file is emptied (everything acknowledged) only once the state saying so is on disk.
//! A power cut can then leave an older `acked` (acknowledged labels are sent again, with their old `seq`, which
//! a consumer drops as duplicates) but never an emptied file with an older `acked`, which would make the next
//! labels reuse sequence numbers.
//!
//! On open, records are read until the first one that is incomplete or fails its CRC; that tail (a write cut
//! off by a power loss) is truncated away and the rest is replayed in order.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"MIENSPL1";
const HEADER: usize = 16;
/// Largest payload accepted (a label message is ~130 bytes).
pub const MAX_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// fsync after every record: a power cut loses nothing that was appended. Acknowledgements reach
    /// `spool.state` at most once a second ([`ACK_STATE_EVERY`]): a cut may send up to that second's delivered
    /// labels again (same `seq`), never lose one.
    Always,
    /// fsync at most every `fsync_interval_ms`: a power cut loses at most that window.
    Interval,
    /// Leave it to the kernel (~30 s of dirty page write-back).
    Never,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub fsync: Fsync,
    pub fsync_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Records still to deliver after opening.
    pub pending: u64,
    /// Bytes of a torn or corrupt tail that were cut off.
    pub truncated_bytes: u64,
    /// Whole records skipped because their number did not follow the one before (a file mien did not write
    /// in one piece: two spools joined, a record copied back); each is kept in order of first appearance.
    pub out_of_order: u64,
}

/// Under `fsync = "always"`, the longest a delivered label's acknowledgement waits before `spool.state` is
/// rewritten and synced. Writing it per PUBACK was a second fsync (plus a file create and a rename) per label;
/// SD cards wear by such small synced writes.
pub const ACK_STATE_EVERY: Duration = Duration::from_secs(1);

/// The largest sequence number a spool uses (2^53 - 1: every JSON consumer reads it exactly). A record or a
/// state beyond it is corrupt.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

pub struct Spool {
    cfg: SpoolConfig,
    file: File,
    /// Unacknowledged records, oldest first (kept in memory too: a full spool is a few MB at most).
    pending: VecDeque<Record>,
    next_seq: u64,
    acked: u64,
    dropped: u64,
    bytes: u64,
    last_sync: Instant,
    /// When `spool.state` was last written (none yet: the next acknowledgement writes it).
    last_state: Option<Instant>,
    /// Appended data not yet fsynced.
    dirty: bool,
    /// Acknowledgements not yet in `spool.state` (`interval`: written with the next sync).
    state_dirty: bool,
    /// Everything is acknowledged: empty the data file once the state is synced.
    empty_when_synced: bool,
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode(r: &Record, out: &mut Vec<u8>) {
    out.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(r.seq, &r.payload).to_le_bytes());
    out.extend_from_slice(&r.seq.to_le_bytes());
    out.extend_from_slice(&r.payload);
}

impl Spool {
    /// Open (or create) the spool in `cfg.dir`, recovering from a torn tail.
    pub fn open(cfg: SpoolConfig) -> io::Result<(Spool, Recovery)> {
        std::fs::create_dir_all(&cfg.dir)?;
        let (acked, dropped) = read_state(&cfg.dir.join("spool.state"))?;
        let path = cfg.dir.join("spool.dat");
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let len = file.metadata()?.len();
        let mut pending = VecDeque::new();
        let mut max_seq = acked;
        let mut good_end = 8u64;
        let mut out_of_order = 0u64;
        if len < 8 {
            file.set_len(0)?;
            file.write_all(MAGIC)?;
        } else {
            let mut r = BufReader::new(&mut file);
            let mut magic = [0u8; 8];
            r.read_exact(&mut magic)?;
            if &magic != MAGIC {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a mien spool (bad magic); move it away to start a new one", path.display()),
                ));
            }
            let mut head = [0u8; HEADER];
            loop {
                if r.read_exact(&mut head).is_err() {
                    break;
                }
                let n = u32::from_le_bytes(head[0..4].try_into().unwrap()) as usize;
                let sum = u32::from_le_bytes(head[4..8].try_into().unwrap());
                let seq = u64::from_le_bytes(head[8..16].try_into().unwrap());
                if n > MAX_PAYLOAD {
                    break;
                }
                let mut payload = vec![0; n];
                if r.read_exact(&mut payload).is_err() || crc(seq, &payload) != sum {
                    break;
                }
                if seq > MAX_SEQ {
                    break; // not a number mien writes: corrupt from here on
                }
                good_end += (HEADER + n) as u64;
                if pending.back().is_some_and(|r: &Record| seq <= r.seq) {
                    out_of_order += 1; // replayed in order, once: a repeated or older number is skipped
                    continue;
                }
                max_seq = max_seq.max(seq);
                if seq > acked {
                    pending.push_back(Record { seq, payload });
                }
            }
        }
        let truncated_bytes = len.saturating_sub(good_end.max(8));
        if truncated_bytes > 0 {
            log::warn!("spool {}: cut {truncated_bytes} bytes of a torn or corrupt tail", path.display());
            file.set_len(good_end)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        let bytes = file.metadata()?.len();
        if out_of_order > 0 {
            log::warn!("spool {}: skipped {out_of_order} records whose numbers went backwards", path.display());
        }
        let rec = Recovery { pending: pending.len() as u64, truncated_bytes, out_of_order };
        let spool = Spool {
            cfg,
            file,
            pending,
            next_seq: max_seq + 1,
            acked,
            dropped,
            bytes,
            last_sync: Instant::now(),
            last_state: None,
            dirty: false,
            state_dirty: false,
            empty_when_synced: false,
        };
        Ok((spool, rec))
    }

    /// Append one payload; returns its sequence number. Drops the oldest records when over the size bound.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<u64> {
        if payload.len() > MAX_PAYLOAD {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "spool record over 64 KiB"));
        }
        let rec = Record { seq: self.next_seq, payload: payload.to_vec() };
        let mut buf = Vec::with_capacity(HEADER + payload.len());
        encode(&rec, &mut buf);
        if self.bytes + buf.len() as u64 > self.cfg.max_bytes {
            self.make_room(buf.len() as u64)?;
        }
        self.file.write_all(&buf)?;
        self.bytes += buf.len() as u64;
        self.next_seq += 1;
        self.pending.push_back(rec);
        self.dirty = true;
        self.sync_by_policy()?;
        Ok(self.next_seq - 1)
    }

    /// The oldest unacknowledged records, in order.
    pub fn pending(&self) -> impl Iterator<Item = &Record> {
        self.pending.iter()
    }

    /// The sequence number the next `append` will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// fsync whatever is not yet synced, whatever the policy (on shutdown).
    pub fn sync_now(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        if self.state_dirty {
            self.write_state(true)?;
        }
        self.last_sync = Instant::now();
        if self.empty_when_synced {
            self.empty_when_synced = false;
            if self.pending.is_empty() {
                self.empty_data()?;
            }
        }
        Ok(())
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Mark every record up to and including `seq` as delivered. The new state is written with the next sync:
    /// under `interval` with the data's, under `always` at most once every [`ACK_STATE_EVERY`], under `never`
    /// at once (unsynced). A power cut or a kill may then send the acknowledged labels of that window again,
    /// with their own `seq`, but loses none.
    pub fn ack_through(&mut self, seq: u64) -> io::Result<()> {
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq;
        while self.pending.front().is_some_and(|r| r.seq <= seq) {
            self.pending.pop_front();
        }
        if self.cfg.fsync == Fsync::Never {
            self.write_state(false)?;
            if self.pending.is_empty() {
                self.empty_data()?;
            }
            return Ok(());
        }
        self.state_dirty = true;
        if self.pending.is_empty() {
            // Everything delivered: start the data file afresh (keeps it small), but only once the state that
            // says so is on disk (see the ordering rule above).
            self.empty_when_synced = true;
        }
        self.sync_by_policy()
    }

    fn empty_data(&mut self) -> io::Result<()> {
        self.file.set_len(8)?;
        self.file.seek(SeekFrom::End(0))?;
        self.bytes = 8;
        Ok(())
    }

    /// fsync now if the policy says so (also called on a timer by the uplink).
    pub fn sync_by_policy(&mut self) -> io::Result<()> {
        match self.cfg.fsync {
            Fsync::Always => {
                if self.dirty {
                    self.file.sync_data()?;
                    self.dirty = false;
                    self.last_sync = Instant::now();
                }
                let due = self.last_state.is_none_or(|t| t.elapsed() >= ACK_STATE_EVERY);
                if (self.state_dirty || self.empty_when_synced) && due {
                    self.sync_now()?;
                }
            }
            Fsync::Interval => {
                let due = self.last_sync.elapsed() >= self.cfg.fsync_interval;
                if due && (self.dirty || self.state_dirty || self.empty_when_synced) {
                    self.sync_now()?;
                }
            }
            Fsync::Never => {}
        }
        Ok(())
    }

    /// Drop the oldest quarter of the pending records (at least enough for `need` bytes) and rewrite the file.
    fn make_room(&mut self, need: u64) -> io::Result<()> {
        let target = (self.cfg.max_bytes * 3 / 4).saturating_sub(need);
        let mut size: u64 = 8 + self.pending.iter().map(|r| (HEADER + r.payload.len()) as u64).sum::<u64>();
        let mut n = 0u64;
        while size > target {
            let Some(r) = self.pending.pop_front() else { break };
            size -= (HEADER + r.payload.len()) as u64;
            self.acked = self.acked.max(r.seq);
            n += 1;
        }
        self.dropped += n;
        if n > 0 {
            log::warn!("spool full ({} bytes): dropped the {n} oldest labels ({} in all)", self.cfg.max_bytes, self.dropped);
        }
        // Rewrite: the new file holds only what is still pending, renamed over the old one.
        let tmp = self.cfg.dir.join("spool.dat.tmp");
        let mut buf = Vec::with_capacity(size as usize);
        buf.extend_from_slice(MAGIC);
        for r in &self.pending {
            encode(r, &mut buf);
        }
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.cfg.dir.join("spool.dat"))?;
        self.file = OpenOptions::new().read(true).write(true).open(self.cfg.dir.join("spool.dat"))?;
        self.file.seek(SeekFrom::End(0))?;
        self.bytes = buf.len() as u64;
        self.empty_when_synced = false;
        self.write_state(self.cfg.fsync != Fsync::Never)
    }

    /// Replace `spool.state` (write, optionally fsync, rename).
    fn write_state(&mut self, sync: bool) -> io::Result<()> {
        let tmp = self.cfg.dir.join("spool.state.tmp");
        let mut f = File::create(&tmp)?;
        write!(f, "acked={}\ndropped={}\n", self.acked, self.dropped)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.cfg.dir.join("spool.state"))?;
        self.state_dirty = false;
        self.last_state = Some(Instant::now());
        Ok(())
    }
}

fn read_state(p: &Path) -> io::Result<(u64, u64)> {
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let get = |k: &str| {
        text.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('=')?.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    let acked = get("acked");
    if acked > MAX_SEQ {
        // Not a state mien wrote: resend everything in the file (duplicates by seq) rather than drop it all.
        log::warn!("{}: acked={acked} is beyond any sequence number; treating nothing as acknowledged", p.display());
        return Ok((0, get("dropped")));
    }
    Ok((acked, get("dropped")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, max: u64) -> SpoolConfig {
        SpoolConfig { dir: dir.into(), max_bytes: max, fsync: Fsync::Always, fsync_interval: Duration::ZERO }
    }

    #[test]
    fn under_always_acks_reach_the_state_at_most_once_a_second_and_a_kill_in_between_only_resends() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("spool.state");
        let (mut s, _) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        // Delivered as fast as they come: the first acknowledgement is written at once, the next 49 wait.
        for i in 1..=50 {
            assert_eq!(s.append(b"label").unwrap(), i);
            s.ack_through(i).unwrap();
        }
        assert_eq!(read_state(&state).unwrap().0, 1);
        // Every record is on disk (synced as appended), so a kill now sends labels 2..=50 again, losing none.
        let (again, rec) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!((rec.pending, again.pending().next().map(|r| r.seq)), (49, Some(2)));
        drop(again);
        // A second on, the uplink's timer writes the rest; then nothing is pending and the data file is empty.
        std::thread::sleep(ACK_STATE_EVERY + Duration::from_millis(50));
        s.sync_by_policy().unwrap();
        assert_eq!(read_state(&state).unwrap().0, 50);
        assert_eq!(std::fs::metadata(d.path().join("spool.dat")).unwrap().len(), 8);
        drop(s);
        let (s, rec) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!((rec.pending, s.next_seq()), (0, 51));
    }

    #[test]
    fn survives_reopen_and_replays_only_unacked_in_order() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, rec) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!(rec, Recovery::default());
        for i in 0..10 {
            assert_eq!(s.append(format!("label {i}").as_bytes()).unwrap(), i + 1);
        }
        s.ack_through(4).unwrap();
        drop(s);
        let (s, rec) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!(rec.pending, 6);
        let seqs: Vec<u64> = s.pending().map(|r| r.seq).collect();
        assert_eq!(seqs, (5..=10).collect::<Vec<_>>());
        assert_eq!(s.pending().next().unwrap().payload, b"label 4");
    }

    #[test]
    fn data_is_emptied_only_after_the_state_saying_so_is_synced() {
        let d = tempfile::tempdir().unwrap();
        let dat = d.path().join("spool.dat");
        let interval =
            SpoolConfig { fsync: Fsync::Interval, fsync_interval: Duration::from_secs(3600), ..cfg(d.path(), 1 << 20) };
        let (mut s, _) = Spool::open(interval.clone()).unwrap();
        for i in 0..3 {
            s.append(format!("label {i}").as_bytes()).unwrap();
        }
        s.ack_through(3).unwrap();
        // Until the sync, neither the state nor the data file changes.
        assert_eq!(read_state(&d.path().join("spool.state")).unwrap(), (0, 0));
        assert!(std::fs::metadata(&dat).unwrap().len() > 8);
        // A power cut or a kill here: the acknowledged labels come back with their own sequence numbers (a
        // consumer drops them as duplicates), and the next label does not reuse one.
        let saved = std::fs::read(&dat).unwrap();
        drop(s);
        let (mut s, rec) = Spool::open(interval.clone()).unwrap();
        assert_eq!(rec.pending, 3);
        assert_eq!(s.pending().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(s.append(b"next").unwrap(), 4);
        s.ack_through(4).unwrap();
        assert!(std::fs::metadata(&dat).unwrap().len() > saved.len() as u64);
        s.sync_now().unwrap();
        assert_eq!(read_state(&d.path().join("spool.state")).unwrap(), (4, 0));
        assert_eq!(std::fs::metadata(&dat).unwrap().len(), 8, "emptied once the state is synced");
        drop(s);
        let (mut s, rec) = Spool::open(interval).unwrap();
        assert_eq!(rec.pending, 0);
        assert_eq!(s.append(b"after").unwrap(), 5);
        // Under `always` the state is synced with each acknowledgement and the data file emptied at once.
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        s.append(b"one").unwrap();
        s.ack_through(1).unwrap();
        assert_eq!(std::fs::metadata(d.path().join("spool.dat")).unwrap().len(), 8);
    }

    #[test]
    fn torn_or_corrupt_tail_is_cut_and_the_rest_kept() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        for i in 0..5 {
            s.append(format!("label {i}").as_bytes()).unwrap();
        }
        drop(s);
        let p = d.path().join("spool.dat");
        let full = std::fs::read(&p).unwrap();
        // a write cut in the middle of record 5
        std::fs::write(&p, &full[..full.len() - 3]).unwrap();
        let (mut s, rec) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!(rec.pending, 4);
        assert!(rec.truncated_bytes > 0);
        // the next record continues the sequence after the last good one and is readable after reopen
        assert_eq!(s.append(b"after").unwrap(), 5);
        drop(s);
        // flip a payload byte of record 2: records from there on are cut
        let mut bytes = std::fs::read(&p).unwrap();
        let second = 8 + HEADER + "label 0".len() + HEADER;
        bytes[second] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let (s, rec) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!(rec.pending, 1);
        assert_eq!(s.pending().next().unwrap().seq, 1);
    }

    #[test]
    fn records_numbered_out_of_order_are_skipped_and_numbers_never_reused() {
        // Found by the spool_recovery fuzz target's checks: a CRC-valid file whose numbers go backwards (two
        // spools joined) was replayed out of order. Now each number is replayed once, in order.
        let d = tempfile::tempdir().unwrap();
        let mut file = MAGIC.to_vec();
        for seq in [5u64, 3, 6, 6, 2] {
            encode(&Record { seq, payload: format!("r{seq}").into_bytes() }, &mut file);
        }
        std::fs::write(d.path().join("spool.dat"), &file).unwrap();
        let (mut s, rec) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!(s.pending().map(|r| r.seq).collect::<Vec<_>>(), [5, 6]);
        assert_eq!((rec.pending, rec.out_of_order, rec.truncated_bytes), (2, 3, 0));
        assert_eq!(s.append(b"next").unwrap(), 7);
        drop(s);
        // A state claiming more than any number mien writes: nothing counts as acknowledged (sent again, not lost).
        std::fs::write(d.path().join("spool.state"), format!("acked={}\ndropped=0\n", u64::MAX)).unwrap();
        let (s, _) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!(s.pending().map(|r| r.seq).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(s.next_seq(), 8);
    }

    #[test]
    fn full_spool_drops_oldest_and_counts_them() {
        let d = tempfile::tempdir().unwrap();
        let rec_size = (HEADER + 10) as u64;
        let (mut s, _) = Spool::open(cfg(d.path(), 8 + rec_size * 20)).unwrap();
        for i in 0..100u64 {
            s.append(format!("{i:010}").as_bytes()).unwrap();
        }
        let kept: Vec<u64> = s.pending().map(|r| r.seq).collect();
        assert!(kept.len() <= 20 && kept.len() >= 10, "{}", kept.len());
        assert_eq!(*kept.last().unwrap(), 100, "the newest are kept");
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "kept records are contiguous");
        assert_eq!(s.dropped(), 100 - kept.len() as u64);
        let dropped = s.dropped();
        drop(s);
        let (s, _) = Spool::open(cfg(d.path(), 8 + rec_size * 20)).unwrap();
        assert_eq!(s.dropped(), dropped, "the counter survives a restart");
        assert_eq!(s.pending().map(|r| r.seq).collect::<Vec<_>>(), kept);
    }

    #[test]
    fn not_a_spool_is_refused_with_a_message() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("spool.dat"), b"something else entirely").unwrap();
        let e = Spool::open(cfg(d.path(), 1 << 20)).err().unwrap();
        assert!(e.to_string().contains("not a mien spool"), "{e}");
    }
}
