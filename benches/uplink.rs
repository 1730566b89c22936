//! Uplink benchmark: spool append rate under each fsync policy (baseline: `never`, ratio printed), spool
//! acknowledgement rate (`always` and `interval`, which write the state at most once a second or with the next
//! sync, against `never`, which rewrites it unsynced per PUBACK), recovery time after a
//! restart, and the labels/s the MQTT sink sustains to a local mosquitto, end to end (appended, published with
//! QoS 1, acknowledged, removed from the spool).
//!
//! `cargo bench --bench uplink` (needs `mosquitto` on PATH for the MQTT part; it starts its own on a free port)

use mien::expression::Emotion;
use mien::uplink::mqtt::{MqttConfig, MqttSink};
use mien::uplink::spool::{Fsync, Spool, SpoolConfig};
use mien::uplink::{LabelEvent, LabelSink};
use std::time::{Duration, Instant};

fn payload(i: u64) -> Vec<u8> {
    serde_json::to_vec(&LabelEvent::new(1_795_000_000_000 + i, i, 0, 3, Emotion::Neutral, 0.8731)).unwrap()
}

/// A fresh spool under `policy` with `n` labels appended, and the append rate in labels/s.
fn filled_spool(policy: Fsync, n: u64) -> (tempfile::TempDir, Spool, f64) {
    let d = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig { dir: d.path().into(), max_bytes: 1 << 30, fsync: policy, fsync_interval: Duration::from_millis(1000) };
    let (mut s, _) = Spool::open(cfg).unwrap();
    let t = Instant::now();
    for i in 0..n {
        s.append(&payload(i)).unwrap();
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    (d, s, rate)
}

fn spool_rate(policy: Fsync, n: u64) -> f64 {
    filled_spool(policy, n).2
}

/// Acknowledgements per second: `n` labels appended, then acknowledged one at a time (one PUBACK each).
fn ack_rate(policy: Fsync, n: u64) -> f64 {
    let (_d, mut s, _) = filled_spool(policy, n);
    s.sync_now().unwrap();
    let t = Instant::now();
    for seq in 1..=n {
        s.ack_through(seq).unwrap();
        s.sync_by_policy().unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    println!("spool append (one label each, ~{} bytes):", payload(0).len() + 16);
    let never = spool_rate(Fsync::Never, 200_000);
    let interval = spool_rate(Fsync::Interval, 200_000);
    let always = spool_rate(Fsync::Always, 2_000);
    println!("  fsync=never     {never:>12.0} labels/s (baseline)");
    println!("  fsync=interval  {interval:>12.0} labels/s  ratio {:.2}", interval / never);
    println!("  fsync=always    {always:>12.0} labels/s  ratio {:.4}", always / never);
    // `never` rewrites spool.state (unsynced) on every acknowledgement: the baseline. `always` writes and syncs it
    // at most once a second, `interval` with the next data sync.
    println!("spool acknowledgement (one PUBACK each):");
    let ack_never = ack_rate(Fsync::Never, 20_000);
    let ack_always = ack_rate(Fsync::Always, 20_000);
    let ack_interval = ack_rate(Fsync::Interval, 20_000);
    println!("  fsync=never     {ack_never:>12.0} acks/s (baseline: the state rewritten per PUBACK)");
    println!("  fsync=always    {ack_always:>12.0} acks/s  ratio {:.1}", ack_always / ack_never);
    println!("  fsync=interval  {ack_interval:>12.0} acks/s  ratio {:.1}", ack_interval / ack_never);

    // Recovery: reopen a spool holding 100k pending labels (what a day offline at ~1 label/s leaves).
    let d = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig { dir: d.path().into(), max_bytes: 1 << 30, fsync: Fsync::Never, fsync_interval: Duration::ZERO };
    {
        let (mut s, _) = Spool::open(cfg.clone()).unwrap();
        for i in 0..100_000 {
            s.append(&payload(i)).unwrap();
        }
    }
    let bytes = std::fs::metadata(d.path().join("spool.dat")).unwrap().len();
    let t = Instant::now();
    let (s, rec) = Spool::open(cfg).unwrap();
    println!(
        "spool recovery: {} labels ({:.1} MB) read and checked in {:.1} ms",
        rec.pending,
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(s);

    // MQTT end to end against a local mosquitto.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = d.path().join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\n")).unwrap();
    let Ok(mut broker) = std::process::Command::new("mosquitto").arg("-c").arg(&conf).stderr(std::process::Stdio::null()).spawn() else {
        println!("mqtt: mosquitto not found, skipped");
        return;
    };
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut mc = MqttConfig::default();
    mc.enabled = true;
    mc.host = "127.0.0.1".into();
    mc.port = port;
    mc.tls = false;
    mc.device = "bench".into();
    mc.spool_dir = d.path().join("mqtt-spool").display().to_string();
    mc.fsync = Fsync::Interval;
    let mut sink = MqttSink::start(&mc, vec![]).unwrap();
    while !sink.counters().connected {
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = 20_000u64;
    let t = Instant::now();
    for i in 0..n {
        sink.send(&LabelEvent::new(i, i, 0, 0, Emotion::Happiness, 0.9)).unwrap();
    }
    while sink.counters().pending > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = t.elapsed().as_secs_f64();
    println!("mqtt (QoS 1, fsync=interval, loopback mosquitto): {n} labels acknowledged in {secs:.2} s = {:.0} labels/s", n as f64 / secs);
    drop(sink);
    let _ = broker.kill();
    let _ = broker.wait();
}
