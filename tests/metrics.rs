//! The fleet's metrics (`[metrics]`): the textfile and the HTTP endpoint hold the Prometheus text format, parsed
//! here with a Prometheus text parser (the `prometheus-parse` crate) and, in the ignored test `.ci/run` runs, by
//! Prometheus's own tools (`promtool check metrics`, and node_exporter's textfile collector reading the file).
//! The counts are checked against what the run itself reports, and the uplink's against a real mosquitto.

mod common;
use common::*;
use prometheus_parse::{Sample, Scrape, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The default profile with `[metrics]` replaced by `metrics` (TOML lines).
fn profile_with(dir: &Path, base: &str, metrics: &str) -> PathBuf {
    let p = dir.join("metrics.toml");
    let cut = base.find("[metrics]").expect("the profile has a [metrics] section");
    let rest = &base[cut..];
    let end = rest[1..].find("\n[").map_or(base.len(), |i| cut + 1 + i + 1);
    std::fs::write(&p, format!("{}{}\n[metrics]\n{metrics}\n", &base[..cut], &base[end..])).unwrap();
    p
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap_or_else(|e| panic!("not the text format: {e}\n{text}"))
}

/// The one sample named `name` whose labels include `labels`.
fn sample<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Sample {
    let mut hits = s.samples.iter().filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)));
    let one = hits.next().unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape"));
    assert!(hits.next().is_none(), "{name}{labels:?} is there twice");
    one
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match &sample(s, name, labels).value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

/// A plain HTTP/1.0 request: (status code, headers, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut c = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (code, head.to_string(), body.to_string())
}

/// `mien run` in the background; stderr is read on a thread, which returns the endpoint's address once logged.
struct Running {
    child: Child,
    addr: Option<SocketAddr>,
    log: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = mien().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running { child, addr: None, log }
    }

    /// Wait for "serving http://ADDR/metrics" in the log.
    fn endpoint(&mut self) -> SocketAddr {
        let t = Instant::now();
        while self.addr.is_none() {
            let line = self.log.recv_timeout(Duration::from_secs(60)).expect("no metrics endpoint logged in 60 s");
            if let Some(rest) = line.split("serving http://").nth(1) {
                self.addr = rest.split('/').next().and_then(|a| a.parse().ok());
            }
            assert!(t.elapsed() < Duration::from_secs(60));
        }
        self.addr.unwrap()
    }

    fn scrape(&mut self) -> (String, Scrape) {
        let (code, head, body) = http(self.endpoint(), "GET", "/metrics");
        assert_eq!(code, 200, "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
        let s = parse(&body);
        (body, s)
    }

    /// Scrape until `done` holds (60 s at most).
    fn scrape_until(&mut self, what: &str, done: impl Fn(&Scrape) -> bool) -> (String, Scrape) {
        let t = Instant::now();
        loop {
            let got = self.scrape();
            if done(&got.1) {
                return got;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{what} did not happen in 60 s:\n{}", got.0);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, as systemd stops the service; the run must end cleanly. Returns its log.
    fn stop(mut self) -> String {
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
        let st = self.child.wait().unwrap();
        let log: Vec<String> = self.log.try_iter().collect();
        assert!(st.success(), "exit {st}:\n{}", log.join("\n"));
        log.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(p: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(p).unwrap();
    sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The number before `what` in the run's closing log line ("done: 24 frames (...), 243 faces, 24 labels, ...").
fn logged(log: &str, what: &str) -> u64 {
    let done = log.lines().find(|l| l.contains("done: ")).unwrap_or_else(|| panic!("no closing line in\n{log}"));
    let before = done.split(&format!(" {what}")).next().unwrap();
    before.rsplit(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap_or_else(|e| panic!("{what} in {done}: {e}"))
}

#[test]
fn the_textfile_counts_the_run_as_its_log_does() {
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("mien.prom");
    let cfg = profile_with(dir.path(), mien::config::DEFAULT_PROFILE, &format!("textfile = {prom:?}\ninterval_ms = 1000"));
    let out = run_ok(&["run", "--config", cfg.to_str().unwrap(), "--max-frames", "24"]);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let labels = String::from_utf8_lossy(&out.stdout).lines().count() as f64;
    let s = parse(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(value(&s, "mien_frames_total", &[]), 24.0);
    assert_eq!(value(&s, "mien_faces_total", &[]), logged(&log, "faces") as f64);
    assert!(value(&s, "mien_faces_total", &[]) >= 24.0, "the clip has a face in every frame");
    assert_eq!(value(&s, "mien_labels_total", &[]), labels);
    assert_eq!(value(&s, "mien_frames_masked_whole_total", &[]), 0.0);
    assert_eq!(value(&s, "mien_privacy_state", &[("state", "ok")]), 1.0);
    assert_eq!(value(&s, "mien_privacy_state", &[("state", "masked_whole")]), 0.0);
    assert_eq!(value(&s, "mien_camera_state", &[("state", "ok")]), 1.0);
    assert_eq!(value(&s, "mien_uplink_state", &[("state", "local")]), 1.0);
    // One latency sample per frame in every stage, each in its buckets.
    for stage in mien::metrics::STAGES {
        let h = s.samples.iter().find(|x| x.metric == "mien_stage_seconds" && x.labels.get("stage") == Some(stage));
        let Some(Value::Histogram(buckets)) = h.map(|x| &x.value) else { panic!("no histogram for {stage}") };
        let inf = buckets.iter().find(|b| b.less_than.is_infinite()).expect("+Inf bucket");
        assert_eq!(inf.count, 24.0, "{stage}");
        assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "{stage}: buckets are cumulative");
    }
    // The models' hashes are those of the files loaded.
    for (role, file) in [("detect", "models/blazeface_short_range.onnx"), ("expression", "models/mien_student_int8.onnx")] {
        let m = sample(&s, "mien_model_info", &[("role", role)]);
        assert_eq!(m.labels.get("file"), Some(file));
        assert_eq!(m.labels.get("sha256"), Some(sha256_hex(&repo(file)).as_str()), "{role}");
    }
    assert_eq!(value(&s, "mien_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    // The rename left nothing else behind (node_exporter would read a stray *.prom).
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn the_endpoint_serves_while_running_and_nothing_listens_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = profile_with(dir.path(), mien::config::DEFAULT_PROFILE, "listen = \"127.0.0.1:0\"");
    let mut run = Running::start(&["run", "--config", cfg.to_str().unwrap(), "--loop", "--fps", "20"]);
    let addr = run.endpoint();
    assert!(addr.ip().is_loopback(), "{addr}");
    let (_, first) = run.scrape_until("a frame", |s| value(s, "mien_frames_total", &[]) >= 1.0);
    let (_, later) = run.scrape_until("more frames", |s| {
        value(s, "mien_frames_total", &[]) > value(&first, "mien_frames_total", &[])
    });
    assert!(value(&later, "mien_frames_per_second", &[]) > 0.0);
    assert!(value(&later, "mien_last_frame_timestamp_seconds", &[]) >= value(&first, "mien_last_frame_timestamp_seconds", &[]));
    assert_eq!(http(addr, "GET", "/other").0, 404);
    assert_eq!(http(addr, "POST", "/metrics").0, 405);
    run.stop();

    // The default profile opens no socket at all: the process has none among its file descriptors.
    let quiet = Running::start(&["run", "--loop", "--fps", "20"]);
    let t = Instant::now();
    let fd_dir = PathBuf::from(format!("/proc/{}/fd", quiet.child.id()));
    while !quiet.log.try_iter().any(|l| l.contains("source:")) {
        assert!(t.elapsed() < Duration::from_secs(60), "the run did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let sockets = std::fs::read_dir(&fd_dir)
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count();
    quiet.stop();
    assert_eq!(sockets, 0, "the default profile must not open a socket");
}

#[test]
fn a_bad_metrics_setting_is_named_and_a_taken_port_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = profile_with(dir.path(), mien::config::DEFAULT_PROFILE, "listen = \"localhost\"");
    let out = mien().args(["run", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics.listen"), "{}", String::from_utf8_lossy(&out.stderr));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = profile_with(dir.path(), mien::config::DEFAULT_PROFILE, &format!("listen = \"{}\"", taken.local_addr().unwrap()));
    let out = mien().args(["run", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("metrics.listen") && err.contains("cannot serve"), "{err}");

    // A textfile directory that is not there is logged with the field, and the camera's work goes on.
    let cfg = profile_with(dir.path(), mien::config::DEFAULT_PROFILE, "textfile = \"/nonexistent/dir/mien.prom\"");
    let out = run_ok(&["run", "--config", cfg.to_str().unwrap(), "--max-frames", "4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics.textfile: cannot write /nonexistent/dir/mien.prom"), "{err}");
    assert!(err.contains("done: 4 frames"), "{err}");
}

#[test]
fn masking_and_the_spool_show_as_they_happen() {
    // No detector: every frame is masked whole, and the metrics say so on the first scrape after a frame.
    let dir = tempfile::tempdir().unwrap();
    let cfg = profile_with(dir.path(), mien::config::DEFAULT_PROFILE, "listen = \"127.0.0.1:0\"");
    let args = ["run", "--config", cfg.to_str().unwrap(), "--detect-model", "/nonexistent.onnx", "--loop", "--fps", "20"];
    let mut run = Running::start(&args);
    let (_, s) = run.scrape_until("a masked frame", |s| value(s, "mien_frames_total", &[]) >= 2.0);
    assert_eq!(value(&s, "mien_privacy_state", &[("state", "masked_whole")]), 1.0);
    assert_eq!(value(&s, "mien_frames_masked_whole_total", &[]), value(&s, "mien_frames_total", &[]));
    assert_eq!(value(&s, "mien_labels_total", &[]), 0.0);
    run.stop();

    // Broker away: labels spool, the uplink shows down and the spool grows. Broker back: it drains.
    let port = free_port();
    let up = uplink_profile(dir.path(), port);
    let cfg = profile_with(dir.path(), &std::fs::read_to_string(&up).unwrap(), "listen = \"127.0.0.1:0\"");
    let mut run = Running::start(&["run", "--config", cfg.to_str().unwrap(), "--labels", "", "--loop", "--fps", "20"]);
    let (_, s) = run.scrape_until("spooling", |s| value(s, "mien_spool_pending", &[]) >= 10.0);
    assert_eq!(value(&s, "mien_uplink_state", &[("state", "down")]), 1.0);
    assert_eq!(value(&s, "mien_uplink_sent_total", &[]), 0.0);
    let broker = Broker::start(dir.path(), port);
    let (_, s) = run.scrape_until("delivery", |s| {
        value(s, "mien_uplink_state", &[("state", "up")]) == 1.0 && value(s, "mien_uplink_sent_total", &[]) >= 10.0
    });
    assert_eq!(value(&s, "mien_spool_dropped_total", &[]), 0.0);
    run.stop();
    drop(broker);
}

/// Prometheus's own tools, from Debian's packages (`tests/prom/fetch.sh`, which .ci/run calls).
fn prom_tool(name: &str) -> PathBuf {
    let p = repo("tests/prom/work/bin").join(name);
    assert!(p.exists(), "{} is missing: run tests/prom/fetch.sh", p.display());
    p
}

#[test]
#[ignore = "needs promtool and node_exporter (tests/prom/fetch.sh); .ci/run runs it"]
fn promtool_and_node_exporter_read_both_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let textdir = dir.path().join("textfile");
    std::fs::create_dir(&textdir).unwrap();
    let prom = textdir.join("mien.prom");
    let cfg = profile_with(
        dir.path(),
        mien::config::DEFAULT_PROFILE,
        &format!("textfile = {prom:?}\ninterval_ms = 1000\nlisten = \"127.0.0.1:0\""),
    );
    let mut run = Running::start(&["run", "--config", cfg.to_str().unwrap(), "--loop", "--fps", "20"]);
    let (body, _) = run.scrape_until("a frame", |s| value(s, "mien_frames_total", &[]) >= 1.0);

    // promtool lints the endpoint's scrape and the file: both parse and follow Prometheus's naming rules.
    let check = |what: &str, text: &[u8]| {
        let mut c = Command::new(prom_tool("promtool"))
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(text).unwrap();
        let out = c.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.trim().is_empty(), "promtool on the {what}: {said}");
    };
    check("endpoint", body.as_bytes());
    // The file is rewritten every second; wait for one written after a frame.
    let t = Instant::now();
    while std::fs::read_to_string(&prom).map_or(true, |f| value(&parse(&f), "mien_frames_total", &[]) < 1.0) {
        assert!(t.elapsed() < Duration::from_secs(10), "no textfile with a frame in 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    check("textfile", &std::fs::read(&prom).unwrap());

    // node_exporter with only its textfile collector, on mien's directory: it reads the file without error.
    let port = free_port();
    let mut ne = Command::new(prom_tool("node_exporter"))
        .args(["--collector.disable-defaults", "--collector.textfile"])
        .arg(format!("--collector.textfile.directory={}", textdir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "node_exporter did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _, body) = http(addr, "GET", "/metrics");
    let _ = ne.kill();
    let _ = ne.wait();
    run.stop();
    assert_eq!(code, 200);
    let s = parse(&body);
    assert_eq!(value(&s, "node_textfile_scrape_error", &[]), 0.0, "node_exporter could not read mien.prom:\n{body}");
    assert!(value(&s, "mien_frames_total", &[]) >= 1.0);
    assert_eq!(value(&s, "mien_camera_state", &[("state", "ok")]), 1.0);
    let mtime = s.samples.iter().find(|x| {
        x.metric == "node_textfile_mtime_seconds" && x.labels.get("file").is_some_and(|f| f.ends_with("mien.prom"))
    });
    assert!(mtime.is_some(), "node_exporter does not report mien.prom's age (the staleness alert needs it):\n{body}");
}

#[test]
fn doctor_checks_the_metrics_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let prom = dir.path().join("mien.prom");
    let metrics = format!("textfile = {prom:?}\nlisten = \"{}\"", taken.local_addr().unwrap());
    let cfg = profile_with(dir.path(), mien::config::DEFAULT_PROFILE, &metrics);
    let out = mien().args(["doctor", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |name: &str| text.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no {name} in\n{text}")).to_string();
    assert!(row("metrics endpoint").contains("FAIL") && row("metrics endpoint").contains("metrics.listen"), "{text}");
    assert!(!out.status.success(), "a failed check fails doctor");
    // A writable directory that node_exporter does not read: a warning that says so.
    assert!(row("metrics file").contains("WARN") && row("metrics file").contains("node_exporter"), "{text}");
    drop(taken);
    let cfg = profile_with(dir.path(), mien::config::DEFAULT_PROFILE, "textfile = \"/nonexistent/mien.prom\"");
    let out = mien().args(["doctor", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.contains("FAIL") && l.contains("metrics.textfile: /nonexistent")), "{text}");
}

#[test]
#[ignore = "needs promtool (tests/prom/fetch.sh); .ci/run runs it"]
fn the_alerting_rules_are_valid_fire_when_they_should_and_the_readme_shows_them() {
    let dir = repo("packaging/prometheus");
    for args in [&["check", "rules", "mien-alerts.yml"][..], &["test", "rules", "mien-alerts.test.yml"][..]] {
        let out = Command::new(prom_tool("promtool")).args(args).current_dir(&dir).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.contains("SUCCESS"), "promtool {args:?}:\n{said}");
    }
    // Every rule's name and expression appear in the README as they are in the file.
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let rules = std::fs::read_to_string(dir.join("mien-alerts.yml")).unwrap();
    let mut n = 0;
    for l in rules.lines().map(str::trim).filter(|l| l.starts_with("- alert:") || l.starts_with("expr:")) {
        let l = l.trim_start_matches("- ");
        assert!(readme.contains(l), "README lacks {l:?}");
        n += 1;
    }
    assert_eq!(n, 12, "six alerts, each with its expression");
}
