//! Outages at their real length (not CI; `scripts/outage.sh` runs it): the `mien` binary at full rate on the
//! bundled clip (looped, the Pi profiles' detector) against a real mosquitto, then
//!
//! 1. a broker outage of `--outage-s` seconds (600 by default), reporting labels produced, delivered,
//!    duplicated and lost, and the spool's size over time (from mien's own metrics textfile);
//! 2. a power-cut simulation: with the broker away, mien is SIGKILLed `--kills` times at random moments while it
//!    spools; after each kill, under `fsync = "interval"` the spool file loses a random part of what was written
//!    in the last second (what a power cut takes from the page cache), under `always` it gets a torn partial
//!    record (a power cut mid-write); then the broker comes back and a last run drains.
//!    Labels lost are counted, and each lost label is checked to lie within the fsync window before a cut.
//!
//! `cargo run --release --example outage -- [--outage-s 600] [--kills 20] [--fsync always|interval]`
//!
//! `--sync-writes SECS [--baseline MIEN_BINARY]` measures instead what delivering labels costs the SD card:
//! mien (and the baseline binary, in the same run, against the same broker) at full rate with the broker up and
//! `fsync = "always"`, under `strace -c`, counting the fsync/fdatasync, rename and ftruncate calls per second
//! and per label delivered.
//! Labels are matched by (ts_ms, frame, face) between mien's local JSON-lines file and the broker's messages.

mod common;
// The tests' mosquitto (persistence on, so messages queued for the subscriber survive a broker restart).
#[path = "../tests/common/broker.rs"]
#[allow(dead_code)]
mod broker;
use broker::{free_port, Broker};
use common::Rng;
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)?.parse().ok()).unwrap_or(default)
}

type Key = (u64, u64, u64);

fn key(v: &serde_json::Value) -> Key {
    (v["ts_ms"].as_u64().unwrap_or(0), v["frame"].as_u64().unwrap_or(0), v["face"].as_u64().unwrap_or(0))
}

/// A persistent-session subscriber: how many times each label arrived, by its key.
fn subscribe(port: u16) -> Arc<Mutex<HashMap<Key, u32>>> {
    let got: Arc<Mutex<HashMap<Key, u32>>> = Arc::default();
    let mut o = MqttOptions::new("mien-outage-subscriber", "127.0.0.1", port);
    o.set_clean_session(false).set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 1000);
    let g = got.clone();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = client.try_subscribe("mien/site/cam1/expression", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                        *g.lock().unwrap().entry(key(&v)).or_default() += 1;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
                _ => {}
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    got
}

/// The tests' uplink profile (127.0.0.1:`port`, no TLS, spool under `dir`) with the Pi profiles' detector, the
/// fsync policy, a longer drain and a metrics textfile rewritten every second.
fn profile(dir: &Path, port: u16, fsync: &str) -> PathBuf {
    let mut text = std::fs::read_to_string(broker::uplink_profile(dir, port)).unwrap();
    for (from, to) in [
        ("min_face = 32", "min_face = 40".to_string()),
        ("min_face = 16", "min_face = 40".into()),
        ("fsync = \"interval\"", format!("fsync = \"{fsync}\"")),
        ("drain_s = 20", "drain_s = 60".into()),
        ("textfile = \"\"", format!("textfile = \"{}/mien.prom\"", dir.display())),
        ("interval_ms = 15000", "interval_ms = 1000".into()),
    ] {
        assert!(text.contains(from), "{from:?} not in the profile");
        text = text.replace(from, &to);
    }
    let p = dir.join("outage.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The mien binary measured: `MIEN_BIN`, else this checkout's release build.
fn mien_bin() -> String {
    std::env::var("MIEN_BIN").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/mien").into())
}

fn mien(cfg: &Path, labels: &Path) -> Child {
    Command::new(mien_bin())
        .args(["run", "--config", cfg.to_str().unwrap(), "--labels", labels.to_str().unwrap(), "--loop"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run target/release/mien (cargo build --release first)")
}

/// Labels in the local file(s) mien wrote, by key (a line cut by a kill is skipped).
fn produced(files: &[PathBuf]) -> HashMap<Key, u64> {
    let mut m = HashMap::new();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                m.insert(key(&v), v["ts_ms"].as_u64().unwrap_or(0));
            }
        }
    }
    m
}

/// `mien_spool_pending` from the metrics textfile.
fn spool_pending(prom: &Path) -> Option<u64> {
    let t = std::fs::read_to_string(prom).ok()?;
    t.lines().find_map(|l| l.strip_prefix("mien_spool_pending ")?.trim().parse::<f64>().ok()).map(|v| v as u64)
}

fn stop(mut c: Child) {
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let _ = c.wait();
}

/// Wait until every produced label arrived or `limit` passed; returns (delivered, duplicates, lost keys).
fn settle(got: &Mutex<HashMap<Key, u32>>, made: &HashMap<Key, u64>, limit: Duration) -> (usize, u64, Vec<Key>) {
    let t = Instant::now();
    loop {
        let g = got.lock().unwrap();
        let lost: Vec<Key> = made.keys().filter(|k| !g.contains_key(k)).copied().collect();
        if lost.is_empty() || t.elapsed() > limit {
            let dups = g.values().map(|&c| c as u64 - 1).sum();
            return (g.len(), dups, lost);
        }
        drop(g);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Calls per syscall from an `strace -c` summary file.
fn strace_counts(path: &Path) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut m = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors,] syscall
        if f.len() >= 5 && f[0].parse::<f64>().is_ok() {
            if let (Some(name), Ok(calls)) = (f.last(), f[3].parse::<u64>()) {
                m.insert(name.to_string(), calls);
            }
        }
    }
    m
}

/// The SD card's share of delivering labels: sync calls per second and per label, this build against a
/// baseline binary, each for `secs` at full rate with the broker up.
fn sync_writes(secs: u64) {
    let mut bins = vec![("this build".to_string(), mien_bin())];
    let baseline: String = arg("--baseline", String::new());
    if !baseline.is_empty() {
        bins.push(("baseline".into(), baseline));
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), free_port());
    let got = subscribe(broker.port);
    println!("sync writes: mien at full rate, broker up, fsync = \"always\", {secs} s per binary under strace -c");
    println!("{:<11} {:>8} {:>9} {:>8} {:>8} {:>10} {:>10} {:>12}", "binary", "labels", "delivered", "fsync/s", "rename/s", "ftrunc/s", "syncs/label", "binary path");
    let mut per_label = Vec::new();
    for (i, (name, bin)) in bins.iter().enumerate() {
        let d = dir.path().join(format!("run{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let cfg = profile(&d, broker.port, "always");
        let labels = d.join("labels.jsonl");
        let out = d.join("strace.txt");
        let mut c = Command::new("strace")
            .args(["--seccomp-bpf", "-f", "-qq", "-c", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,ftruncate"])
            .arg("-o")
            .arg(&out)
            .arg(bin)
            .args(["run", "--config", cfg.to_str().unwrap(), "--labels", labels.to_str().unwrap(), "--loop"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace (apt install strace)");
        std::thread::sleep(Duration::from_secs(secs));
        // SIGTERM mien itself (strace's child): it drains and exits, then strace writes its summary.
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", c.id())).unwrap_or_default();
        for pid in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = c.wait();
        let made = produced(std::slice::from_ref(&labels));
        let (delivered, _, _) = settle(&got, &made, Duration::from_secs(30));
        got.lock().unwrap().clear();
        let n = strace_counts(&out);
        let get = |k: &[&str]| k.iter().map(|s| n.get(*s).copied().unwrap_or(0)).sum::<u64>();
        let (syncs, renames, truncs) = (get(&["fsync", "fdatasync"]), get(&["rename", "renameat", "renameat2"]), get(&["ftruncate"]));
        let per = syncs as f64 / made.len().max(1) as f64;
        per_label.push(per);
        let rate = |x: u64| x as f64 / secs as f64;
        println!(
            "{name:<11} {:>8} {delivered:>9} {:>8.1} {:>8.1} {:>10.1} {per:>10.2}   {bin}",
            made.len(),
            rate(syncs),
            rate(renames),
            rate(truncs)
        );
    }
    if per_label.len() == 2 {
        println!("sync calls per label, this build / baseline: {:.2}", per_label[0] / per_label[1]);
    }
}

fn main() {
    let sync_secs: u64 = arg("--sync-writes", 0);
    if sync_secs > 0 {
        return sync_writes(sync_secs);
    }
    let outage_s: u64 = arg("--outage-s", 600);
    let kills: usize = arg("--kills", 20);
    let fsync: String = arg("--fsync", "always".to_string());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut broker = Broker::start(d, free_port());
    let got = subscribe(broker.port);
    let cfg = profile(d, broker.port, &fsync);
    let prom = d.join("mien.prom");
    println!("outage: mien at full rate on the looped clip, fsync = {fsync}, broker on port {}", broker.port);

    // 1. The outage.
    let labels_a = d.join("labels-a.jsonl");
    let run = mien(&cfg, &labels_a);
    let t0 = Instant::now();
    let mut spool_log: Vec<(u64, u64)> = Vec::new();
    let mut sample = |spool_log: &mut Vec<(u64, u64)>| {
        if let Some(p) = spool_pending(&prom) {
            spool_log.push((t0.elapsed().as_secs(), p));
        }
    };
    let phase = |secs: u64, spool_log: &mut Vec<(u64, u64)>, sample: &mut dyn FnMut(&mut Vec<(u64, u64)>)| {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            std::thread::sleep(Duration::from_secs(1));
            sample(spool_log);
        }
    };
    phase(20, &mut spool_log, &mut sample);
    broker.stop();
    println!("outage: broker stopped at {} s for {outage_s} s", t0.elapsed().as_secs());
    phase(outage_s, &mut spool_log, &mut sample);
    broker.restart();
    println!("outage: broker back at {} s", t0.elapsed().as_secs());
    phase(60, &mut spool_log, &mut sample);
    stop(run);
    let made = produced(std::slice::from_ref(&labels_a));
    let (delivered, dups, lost) = settle(&got, &made, Duration::from_secs(120));
    let outage_lost = lost.len();
    let secs = t0.elapsed().as_secs();
    println!("outage: {} labels produced in {secs} s ({:.1}/s), {delivered} delivered, {dups} duplicates, {} lost", made.len(), made.len() as f64 / secs as f64, lost.len());
    let peak = spool_log.iter().map(|s| s.1).max().unwrap_or(0);
    let every = (spool_log.len() / 12).max(1);
    let curve: Vec<String> = spool_log.iter().step_by(every).map(|(t, p)| format!("{t}s:{p}")).collect();
    println!("outage: spool pending over time (peak {peak}): {}", curve.join(" "));
    println!("outage: spool file after the drain: {} bytes", std::fs::metadata(d.join("spool/spool.dat")).map_or(0, |m| m.len()));

    // 2. Power cuts while spooling.
    got.lock().unwrap().clear();
    broker.stop();
    let mut rng = Rng(7);
    let window_ms: u64 = if fsync == "always" { 0 } else { 1000 };
    let mut files = Vec::new();
    // Per killed run: its labels file and how many of its lines were written before the window began (their
    // spool records lie before the size taken then, which the cut never reaches).
    let mut before_window: Vec<(PathBuf, usize)> = Vec::new();
    let mut cut_bytes = 0u64;
    let spool_dat = d.join("spool/spool.dat");
    for k in 0..kills {
        let f = d.join(format!("labels-b{k}.jsonl"));
        let size_before = std::fs::metadata(&spool_dat).map_or(0, |m| m.len());
        let c = mien(&cfg, &f);
        std::thread::sleep(Duration::from_millis(1500 + rng.below(2500) as u64));
        // Lines first, then the size: every counted line's record is within that size (a label is spooled
        // before its line is written). Under `interval` everything before it is synced by the kill.
        let lines = std::fs::read_to_string(&f).map_or(0, |t| t.lines().count());
        let synced = std::fs::metadata(&spool_dat).map_or(0, |m| m.len());
        std::thread::sleep(Duration::from_millis(window_ms));
        let mut c = c;
        let _ = c.kill(); // SIGKILL: no drain, no sync
        let _ = c.wait();
        before_window.push((f.clone(), if window_ms == 0 { usize::MAX } else { lines }));
        let len = std::fs::metadata(&spool_dat).map_or(0, |m| m.len());
        if window_ms == 0 {
            // `always`: every record whose append returned is on disk; the cut tears the next one mid-write.
            let torn: Vec<u8> = (0..1 + rng.below(40)).map(|_| rng.next() as u8).collect();
            use std::io::Write;
            std::fs::OpenOptions::new().append(true).open(&spool_dat).unwrap().write_all(&torn).unwrap();
            cut_bytes += torn.len() as u64;
        } else {
            // `interval`: a random part of what was written since the last sync is gone.
            let floor = synced.max(size_before.min(len)).min(len);
            let keep = floor + rng.below((len - floor + 1) as usize) as u64;
            std::fs::OpenOptions::new().write(true).open(&spool_dat).unwrap().set_len(keep).unwrap();
            cut_bytes += len - keep;
        }
        files.push(f);
    }
    broker.restart();
    let f = d.join("labels-drain.jsonl");
    let c = mien(&cfg, &f);
    std::thread::sleep(Duration::from_secs(20));
    stop(c);
    files.push(f);
    let made = produced(&files);
    let (delivered, dups, lost) = settle(&got, &made, Duration::from_secs(120));
    // A lost label is excused only if it was written in the fsync window before a cut (under `always`, never).
    let mut beyond: Vec<Key> = Vec::new();
    for (f, n) in &before_window {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if (i < *n || *n == usize::MAX) && lost.contains(&key(&v)) {
                    beyond.push(key(&v));
                }
            }
        }
    }
    println!(
        "power cuts: {kills} SIGKILLs, {cut_bytes} bytes of spool tail torn or cut; {} labels produced, {delivered} delivered, {dups} duplicates, {} lost ({} of them beyond the {window_ms} ms fsync window)",
        made.len(),
        lost.len(),
        beyond.len()
    );
    if outage_lost > 0 || !beyond.is_empty() {
        std::process::exit(1);
    }
}
