//! The MQTT uplink against a real mosquitto (installed by .ci/run): labels arrive once and in order, a broker
//! outage loses nothing, and bad TLS / credentials / an unreachable broker give clear errors while the
//! pipeline (and the blur) keeps running. Every received message is checked against the schema.

mod common;
use common::*;
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Open a spool directory the way a restarted mien would (checks and recovers it).
fn open_spool(dir: &Path) -> (mien::uplink::spool::Spool, mien::uplink::spool::Recovery) {
    mien::uplink::spool::Spool::open(mien::uplink::spool::SpoolConfig {
        dir: dir.into(),
        max_bytes: 1 << 24,
        fsync: mien::uplink::spool::Fsync::Always,
        fsync_interval: Duration::ZERO,
    })
    .unwrap()
}

/// A persistent-session subscriber: messages published while it is away are queued for it by the broker.
fn subscribe(port: u16, topic: &str) -> mpsc::Receiver<(String, serde_json::Value)> {
    let (tx, rx) = mpsc::channel();
    let mut o = MqttOptions::new("mien-test-subscriber", "127.0.0.1", port);
    o.set_clean_session(false).set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 100);
    let topic = topic.to_string();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = client.try_subscribe(&topic, QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let v = serde_json::from_slice(&p.payload).unwrap_or_else(|e| panic!("not JSON on {}: {e}", p.topic));
                    if tx.send((p.topic.clone(), v)).is_err() {
                        return;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
                _ => {}
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).expect("subscriber did not subscribe");
    rx
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

fn sorted(f: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = f.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

#[derive(Default)]
struct Collected {
    /// label seq -> times received
    seen: BTreeMap<u64, usize>,
    order: Vec<u64>,
    status: Vec<serde_json::Value>,
    aggregates: Vec<serde_json::Value>,
}

/// Collect messages until `n` distinct label seqs arrived or `timeout`; checks every message's fields.
fn collect(rx: &mpsc::Receiver<(String, serde_json::Value)>, n: usize, timeout: Duration) -> Collected {
    let mut c = Collected::default();
    let (seen, order, status) = (&mut c.seen, &mut c.order, &mut c.status);
    let t = Instant::now();
    while seen.len() < n && t.elapsed() < timeout {
        let Ok((topic, v)) = rx.recv_timeout(Duration::from_millis(200)) else { continue };
        if topic.ends_with("/expression") {
            assert_eq!(keys(&v), sorted(&mien::uplink::mqtt::MQTT_LABEL_FIELDS), "label fields: {v}");
            let seq = v["seq"].as_u64().unwrap();
            *seen.entry(seq).or_insert(0) += 1;
            order.push(seq);
        } else if topic.ends_with("/status") {
            assert_eq!(keys(&v), sorted(&mien::uplink::mqtt::STATUS_FIELDS), "status fields: {v}");
            status.push(v);
        } else if topic.ends_with("/aggregate") {
            assert_eq!(keys(&v), sorted(&mien::uplink::mqtt::AGGREGATE_FIELDS), "aggregate fields: {v}");
            c.aggregates.push(v);
        } else {
            panic!("unexpected topic {topic}");
        }
    }
    c
}

/// Rewrite the profile at `path` (see `replaced`).
fn edit(path: &Path, edits: &[(&str, &str)]) {
    std::fs::write(path, replaced(&std::fs::read_to_string(path).unwrap(), edits)).unwrap();
}

#[test]
fn labels_arrive_once_in_order_with_only_schema_fields() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _b = Broker::start(dir.path(), port);
    let rx = subscribe(port, "mien/site/cam1/#");
    let cfg = uplink_profile(dir.path(), port);
    let labels = dir.path().join("labels.jsonl");
    run_ok(&["run", "--config", cfg.to_str().unwrap(), "--labels", labels.to_str().unwrap()]);
    let local = label_lines(&labels);
    assert!(local.len() >= 20);
    let Collected { seen, order, status, .. } = collect(&rx, local.len(), Duration::from_secs(20));
    assert_eq!(seen.len(), local.len(), "every label arrives");
    assert!(seen.values().all(|&c| c == 1), "no duplicates without an outage: {seen:?}");
    assert_eq!(order, (1..=local.len() as u64).collect::<Vec<_>>(), "in order");
    assert!(status.iter().any(|s| s["state"] == "online"), "{status:?}");
    assert!(status.iter().all(|s| s["device"] == "cam1"));
}

#[test]
fn status_reports_camera_and_privacy_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _b = Broker::start(dir.path(), port);
    let rx = subscribe(port, "mien/site/cam1/status");
    let cfg = uplink_profile(dir.path(), port);
    // No detector: every frame masked whole. The status says so without waiting for the 30 s period.
    let mut run = mien()
        .args(["run", "--config", cfg.to_str().unwrap(), "--detect-model", "/nonexistent.onnx", "--loop", "--fps", "10"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let mut got = None;
    while got.is_none() && t.elapsed() < Duration::from_secs(20) {
        if let Ok((_, v)) = rx.recv_timeout(Duration::from_millis(200)) {
            assert_eq!(keys(&v), sorted(&mien::uplink::mqtt::STATUS_FIELDS), "status fields: {v}");
            if v["state"] == "online" && v["privacy"] == "masking" {
                got = Some(v);
            }
        }
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let st = run.wait().unwrap();
    let v = got.expect("no status with privacy = masking within 20 s");
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(v["camera"], "ok", "{v}");
    assert_eq!(v["camera_reconnects"], 0, "{v}");
    assert_eq!(v["v"], mien::uplink::mqtt::STATUS_VERSION, "{v}");
    assert!(st.success(), "{st}");
}

#[test]
fn broker_outage_loses_no_label() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut b = Broker::start(dir.path(), port);
    let rx = subscribe(port, "mien/site/cam1/expression");
    let cfg = uplink_profile(dir.path(), port);
    let labels = dir.path().join("labels.jsonl");
    // ~4 s of frames at 20 fps; the broker is away for about 1.5 s of it.
    let mut mien_run = mien()
        .args(["run", "--config", cfg.to_str().unwrap(), "--labels", labels.to_str().unwrap(), "--loop", "--fps", "20", "--max-frames", "80"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    b.stop();
    std::thread::sleep(Duration::from_millis(1500));
    b.restart();
    let st = mien_run.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(mien_run.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(st.success(), "{err}");
    assert!(err.contains("unreachable"), "the outage must be logged:\n{err}");
    let n = label_lines(&labels).len();
    let Collected { seen, .. } = collect(&rx, n, Duration::from_secs(30));
    let missing: Vec<u64> = (1..=n as u64).filter(|s| !seen.contains_key(s)).collect();
    assert!(missing.is_empty(), "lost {} of {n} labels: {missing:?}\n{err}", missing.len());
    let dups: usize = seen.values().map(|c| c - 1).sum();
    eprintln!("outage test: {n} labels, 0 lost, {dups} duplicates (QoS 1 allowance, detectable by seq)");
}

#[test]
fn unreachable_broker_spools_and_the_pipeline_keeps_blurring() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let cfg = uplink_profile(dir.path(), port);
    let saved = dir.path().join("saved");
    let out = mien()
        .args(["run", "--config", cfg.to_str().unwrap(), "--labels", "-", "--save-blurred", saved.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert_eq!(images(&saved).len(), 24, "every frame still went through privacy");
    let n = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(n >= 20);
    // Everything is waiting in the spool for the next run.
    let (spool, rec) = open_spool(&dir.path().join("spool"));
    assert_eq!(rec.pending as usize, n);
    assert_eq!(spool.pending().next().unwrap().seq, 1);
}

#[test]
fn bad_tls_files_and_wrong_password_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // TLS on with a CA file that does not exist: refused at start, naming the field.
    let cfg = uplink_profile(dir.path(), port);
    edit(&cfg, &[("tls = false", "tls = true"), ("/etc/mien/ca.pem", "/nonexistent/ca.pem")]);
    let out = mien().args(["run", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("uplink.ca_file") && err.contains("/nonexistent/ca.pem"), "{err}");
    // A CA file that is not PEM.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    edit(&cfg, &[("/nonexistent/ca.pem", junk.to_str().unwrap())]);
    let out = mien().args(["run", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PEM certificate"));

    // A broker that wants a password, given the wrong one: refused by the broker, logged, pipeline goes on.
    let pwfile = dir.path().join("passwd");
    let st = Command::new("mosquitto_passwd").args(["-b", "-c", pwfile.to_str().unwrap(), "mien", "right"]).status().unwrap();
    assert!(st.success());
    let _b = Broker::start_with(dir.path(), port, &format!("allow_anonymous false\npassword_file {}\n", pwfile.display()));
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let cfg = uplink_profile(dir.path(), port);
    let password_file = format!("password_file = \"{}\"", wrong.display());
    edit(
        &cfg,
        &[("username = \"\"", "username = \"mien\""), ("password_file = \"\"", &password_file), ("drain_s = 20", "drain_s = 1")],
    );
    let out = mien().args(["run", "--config", cfg.to_str().unwrap(), "--labels", "-"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("unreachable") && err.to_lowercase().contains("refused"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= 20);
}

#[test]
fn sigkill_while_spooling_loses_nothing_with_fsync_always() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = uplink_profile(dir.path(), port);
    edit(&cfg, &[("fsync = \"interval\"", "fsync = \"always\"")]);
    // Broker down: every label goes to the spool. Kill mien with SIGKILL at awkward moments, five times.
    let data = dir.path().join("spool/spool.dat");
    let size = || std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
    for (i, ms) in [0u64, 37, 110, 5, 260].iter().enumerate() {
        let before = size();
        let mut child = mien()
            .args(["run", "--config", cfg.to_str().unwrap(), "--labels", "-", "--loop", "--fps", "40"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill once this run has spooled something, plus a few ms so the kill lands anywhere in a write.
        let t = Instant::now();
        while size() <= before + 400 {
            assert!(t.elapsed() < Duration::from_secs(60), "kill {i}: mien spooled nothing");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(*ms));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        let (s, rec) = open_spool(&dir.path().join("spool"));
        let seqs: Vec<u64> = s.pending().map(|r| r.seq).collect();
        assert!(!seqs.is_empty(), "kill {i}: nothing spooled");
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "kill {i}: a gap in the spool");
        eprintln!("kill {i}: {} labels spooled, {} bytes of torn tail cut", seqs.len(), rec.truncated_bytes);
    }
    // The broker comes up: everything spooled across the kills is delivered.
    let _b = Broker::start(dir.path(), port);
    let rx = subscribe(port, "mien/site/cam1/expression");
    let (spooled, _) = open_spool(&dir.path().join("spool"));
    let n = spooled.pending_len();
    drop(spooled);
    run_ok(&["run", "--config", cfg.to_str().unwrap(), "--labels", "-", "--max-frames", "1"]);
    let Collected { seen, .. } = collect(&rx, n, Duration::from_secs(30));
    let missing: Vec<u64> = (1..=n as u64).filter(|s| !seen.contains_key(s)).collect();
    assert!(missing.is_empty(), "lost {missing:?} of {n}");
}

/// A throwaway PKI made with the openssl CLI: a CA, a server certificate for 127.0.0.1 and a client one.
fn make_pki(dir: &Path) {
    let sh = |script: &str| {
        let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(&format!(
        "openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=mien-test-ca \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
         openssl req -x509 {ec} -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=someone-else \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
         for who in server client; do
           openssl req {ec} -keyout $who.key -out $who.csr -subj /CN=$who
         done
         printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\nbasicConstraints=CA:FALSE\\n' > server.ext
         printf 'extendedKeyUsage=clientAuth\\nbasicConstraints=CA:FALSE\\n' > client.ext
         for who in server client; do
           openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 2 -extfile $who.ext
         done"
    ));
}

#[test]
fn tls_with_client_certificate_delivers_and_a_wrong_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let port = free_port();
    let plain_port = free_port();
    // TLS listener requiring a client certificate, plus a plain loopback listener for the test's subscriber.
    let _b = Broker::start_with(
        d,
        port,
        &format!(
            "allow_anonymous true\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nrequire_certificate true\nlistener {plain_port} 127.0.0.1\n",
            d.display()
        ),
    );
    let rx = subscribe(plain_port, "mien/site/cam1/expression");
    let cfg = uplink_profile(d, port);
    let base = std::fs::read_to_string(&cfg).unwrap();
    let tls = |ca: &str| {
        replaced(
            &base,
            &[
                ("tls = false", "tls = true"),
                ("/etc/mien/ca.pem", &format!("{}/{ca}", d.display())),
                ("client_cert = \"\"", &format!("client_cert = \"{}/client.pem\"", d.display())),
                ("client_key = \"\"", &format!("client_key = \"{}/client.key\"", d.display())),
            ],
        )
    };
    std::fs::write(&cfg, tls("ca.pem")).unwrap();
    let labels = d.join("labels.jsonl");
    let out = run_ok(&["run", "--config", cfg.to_str().unwrap(), "--labels", labels.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(TLS)"), "{err}");
    let n = label_lines(&labels).len();
    let Collected { seen, .. } = collect(&rx, n, Duration::from_secs(20));
    assert_eq!(seen.len(), n, "all labels over TLS\n{err}");

    // A CA that did not sign the broker's certificate: the handshake fails, mien says so and keeps going.
    let cfg2 = d.join("wrong-ca.toml");
    let (spool, spool2) = (format!("{}/spool", d.display()), format!("{}/spool2", d.display()));
    std::fs::write(&cfg2, replaced(&tls("other-ca.pem"), &[(&spool, &spool2), ("drain_s = 20", "drain_s = 1")])).unwrap();
    let out = run_ok(&["run", "--config", cfg2.to_str().unwrap(), "--labels", "-"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable") && (err.contains("UnknownIssuer") || err.to_lowercase().contains("certificate")), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= 20);
}

#[test]
fn per_track_aggregates_count_the_labels() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _b = Broker::start(dir.path(), port);
    let rx = subscribe(port, "mien/site/cam1/#");
    let cfg = uplink_profile(dir.path(), port);
    edit(&cfg, &[("aggregate_s = 0", "aggregate_s = 1")]);
    let labels = dir.path().join("labels.jsonl");
    // 40 frames at 10 fps: about four one-second windows.
    run_ok(&["run", "--config", cfg.to_str().unwrap(), "--labels", labels.to_str().unwrap(), "--fps", "10", "--loop", "--max-frames", "40"]);
    let local = label_lines(&labels);
    let c = collect(&rx, local.len(), Duration::from_secs(20));
    assert_eq!(c.seen.len(), local.len());
    // give the last aggregate a moment (it is published after the labels it counts)
    let t = Instant::now();
    let mut aggs = c.aggregates;
    while t.elapsed() < Duration::from_secs(2) {
        if let Ok((topic, v)) = rx.recv_timeout(Duration::from_millis(100)) {
            if topic.ends_with("/aggregate") {
                aggs.push(v);
            }
        }
    }
    assert!(aggs.len() >= 2, "{aggs:?}");
    let mut counted = 0u64;
    for a in &aggs {
        for t in a["tracks"].as_array().unwrap() {
            for (label, n) in t["counts"].as_object().unwrap() {
                label.parse::<mien::expression::Emotion>().unwrap();
                counted += n.as_u64().unwrap();
            }
        }
    }
    // Every aggregated label is a real one; the labels of the last, unfinished window are not aggregated yet.
    assert!(counted <= local.len() as u64 && counted >= local.len() as u64 / 2, "{counted} of {}", local.len());
}

#[test]
fn full_spool_drops_oldest_and_status_reports_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = uplink_profile(dir.path(), port);
    edit(&cfg, &[("spool_max_bytes = 16777216", "spool_max_bytes = 4096"), ("drain_s = 20", "drain_s = 1")]);
    // Broker away: 100 labels (~13 KB) into a 4 KiB spool.
    let out = run_ok(&["run", "--config", cfg.to_str().unwrap(), "--labels", "-", "--loop", "--max-frames", "100"]);
    let total = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    assert!(String::from_utf8_lossy(&out.stderr).contains("spool full"));
    // Broker back: one more run delivers what is left and reports the drops.
    let _b = Broker::start(dir.path(), port);
    let rx = subscribe(port, "mien/site/cam1/#");
    let cfg2 = dir.path().join("drain.toml");
    std::fs::write(&cfg2, replaced(&std::fs::read_to_string(&cfg).unwrap(), &[("drain_s = 1", "drain_s = 20")])).unwrap();
    run_ok(&["run", "--config", cfg2.to_str().unwrap(), "--labels", "-", "--max-frames", "1"]);
    let c = collect(&rx, usize::MAX, Duration::from_secs(5));
    let delivered: Vec<u64> = c.seen.keys().copied().filter(|&s| s <= total).collect();
    let dropped = total - delivered.len() as u64;
    assert!(dropped > 0 && !delivered.is_empty());
    assert_eq!(*delivered.last().unwrap(), total, "the newest labels are the ones kept");
    assert!(delivered.windows(2).all(|w| w[1] == w[0] + 1), "the oldest were dropped, not random ones: {delivered:?}");
    let last_status = c.status.last().expect("a status message");
    assert_eq!(last_status["dropped"].as_u64(), Some(dropped), "{last_status}");
}
