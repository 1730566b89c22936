//! Metrics: the board's health in the Prometheus text format, for the tools a fleet already runs.
//!
//! Two ways out, both reading the same registry (the `prometheus` crate does the encoding):
//! - a file written atomically every `metrics.interval_ms` (temporary file in the same directory, then a
//!   rename), for node_exporter's textfile collector: the usual way on a Pi fleet, no port opened;
//! - an HTTP endpoint (`GET /metrics`), off by default, bound only to the address `metrics.listen` names.
//!
//! The pipeline reports each loop turn as a [`Turn`] of plain numbers and states; this module turns them into
//! counters, gauges and per-stage latency histograms. Nothing here sees a pixel or a label's face.

use crate::uplink::UplinkCounters;
use crate::vocab::{CameraState, LinkState, PrivacyState};
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `[metrics]` section of a profile. Both outputs are off unless named.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A `.prom` file for node_exporter's textfile collector, rewritten atomically every `interval_ms`;
    /// empty = off. Put it on a tmpfs (the service's `/run/mien`) so the rewrites never touch the SD card.
    pub textfile: String,
    /// How often the textfile is rewritten, in ms.
    pub interval_ms: u32,
    /// `address:port` for an HTTP endpoint serving `GET /metrics`; empty = off. `127.0.0.1:9464` keeps it on
    /// the board; `0.0.0.0:9464` opens it to the network.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { textfile: String::new(), interval_ms: 15_000, listen: String::new() }
    }
}

impl MetricsConfig {
    /// The first bad value, with its field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let bad = |field, msg: String| Err((field, msg));
        if !(1_000..=3_600_000).contains(&self.interval_ms) {
            return bad("metrics.interval_ms", format!("{} is out of range (1000..=3600000)", self.interval_ms));
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("metrics.listen", format!("{:?} is not an address:port (e.g. 127.0.0.1:9464)", self.listen));
        }
        if !self.textfile.is_empty() {
            let p = Path::new(&self.textfile);
            if p.file_name().is_none() || p.extension().is_none_or(|e| e != "prom") {
                return bad("metrics.textfile", format!("{:?}: node_exporter reads only files named *.prom", self.textfile));
            }
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        !self.textfile.is_empty() || !self.listen.is_empty()
    }
}

/// The per-stage latency buckets, in seconds: from a fast blur (0.25 ms) to a board that falls behind (2.5 s).
const LATENCY_BUCKETS: [f64; 13] = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The stages whose time goes into `mien_stage_seconds`.
pub const STAGES: [&str; 5] = ["capture", "detect", "blur", "classify", "output"];

/// What one loop turn of the pipeline did, in numbers.
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    pub what: TurnKind,
    /// Seconds per stage, in the order of [`STAGES`] (a processed frame only).
    pub seconds: [f64; 5],
    /// The frame rate the status shows (a moving average).
    pub fps: f32,
    pub camera: CameraState,
    /// The camera's reconnects since start.
    pub reconnects: u64,
    pub link: LinkState,
    /// The MQTT uplink's counters, when there is one.
    pub uplink: Option<UplinkCounters>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TurnKind {
    Processed { faces: usize, labels: usize, privacy: PrivacyState },
    /// A frame that could not be decoded, dropped unseen.
    Corrupt,
    /// No frame: the camera is away.
    CameraAway,
}

/// The registry and its metrics. Cheap to update from the pipeline's thread (atomics); read by the exporters.
pub struct Metrics {
    registry: Registry,
    frames: IntCounter,
    fps: Gauge,
    stage: HistogramVec,
    faces: IntCounter,
    labels: IntCounter,
    masked_whole: IntCounter,
    corrupt: IntCounter,
    camera_away: IntCounter,
    privacy: IntGaugeVec,
    camera: IntGaugeVec,
    reconnects: IntCounter,
    uplink: IntGaugeVec,
    spool_pending: IntGauge,
    spool_dropped: IntCounter,
    uplink_sent: IntCounter,
    last_frame: Gauge,
    /// Last totals seen from the source and the uplink, so their counters move by the difference.
    seen: Mutex<(u64, u64, u64)>,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone())).expect("metric names are unique");
    m
}

impl Metrics {
    /// A registry with every metric at zero. `models` are (role, file, sha256) of the models loaded.
    pub fn new(models: &[(String, String, String)]) -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help).expect("valid name"));
        let states = |name: &str, help: &str, label: &str| {
            register(&r, IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid name"))
        };
        let m = Metrics {
            frames: counter("mien_frames_total", "Frames through the pipeline (each blurred or masked whole)."),
            fps: register(&r, Gauge::new("mien_frames_per_second", "Frame rate, a moving average.").expect("valid")),
            stage: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("mien_stage_seconds", "Time per frame in each pipeline stage.")
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    &["stage"],
                )
                .expect("valid name"),
            ),
            faces: counter("mien_faces_total", "Faces detected (each one blurred)."),
            labels: counter("mien_labels_total", "Expression labels sent."),
            masked_whole: counter(
                "mien_frames_masked_whole_total",
                "Frames masked whole because detection failed, timed out or had no detector.",
            ),
            corrupt: counter("mien_frames_corrupt_total", "Frames that could not be decoded, dropped unseen."),
            camera_away: counter("mien_camera_away_turns_total", "Loop turns with no frame because the camera was away."),
            privacy: states("mien_privacy_state", "1 for the privacy stage's state on the last frame.", "state"),
            camera: states("mien_camera_state", "1 for the camera's state now.", "state"),
            reconnects: counter("mien_camera_reconnects_total", "Times the camera came back after being lost."),
            uplink: states("mien_uplink_state", "1 for the label uplink's state now.", "state"),
            spool_pending: register(
                &r,
                IntGauge::new("mien_spool_pending", "Labels spooled to disk, not yet acknowledged by the broker.")
                    .expect("valid name"),
            ),
            spool_dropped: counter("mien_spool_dropped_total", "Labels dropped because the spool was full."),
            uplink_sent: counter("mien_uplink_sent_total", "Labels the broker acknowledged."),
            last_frame: register(
                &r,
                Gauge::new("mien_last_frame_timestamp_seconds", "Unix time of the last frame processed.")
                    .expect("valid name"),
            ),
            seen: Mutex::new((0, 0, 0)),
            registry: r,
        };
        m.init(models);
        m
    }

    fn init(&self, models: &[(String, String, String)]) {
        let r = &self.registry;
        let model = register(
            r,
            IntGaugeVec::new(Opts::new("mien_model_info", "A model loaded (value 1), by role, file and SHA-256."), &[
                "role", "file", "sha256",
            ])
            .expect("valid name"),
        );
        for (role, file, sha) in models {
            model.with_label_values(&[role.as_str(), file.as_str(), sha.as_str()]).set(1);
        }
        let build = register(
            r,
            IntGaugeVec::new(Opts::new("mien_build_info", "The firmware build (value 1)."), &["version", "arch"])
                .expect("valid name"),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION"), std::env::consts::ARCH]).set(1);
        let started = register(
            r,
            Gauge::new("mien_start_time_seconds", "Unix time the firmware started.").expect("valid name"),
        );
        started.set(unix_now());
        for s in STAGES {
            let _ = self.stage.with_label_values(&[s]); // every stage shows from the start, at zero
        }
        // Before the first frame every state shows, at 0 for privacy (no frame judged yet).
        for p in ["ok", "masked_whole"] {
            self.privacy.with_label_values(&[p]).set(0);
        }
        self.set_states(CameraState::Ok, None, LinkState::Local);
    }

    /// One-hot state gauges: the current state 1, the others 0, so every state is always present.
    fn set_states(&self, camera: CameraState, privacy: Option<PrivacyState>, link: LinkState) {
        let cam = matches!(camera, CameraState::Ok);
        self.camera.with_label_values(&["ok"]).set(cam as i64);
        self.camera.with_label_values(&["lost"]).set(!cam as i64);
        if let Some(p) = privacy {
            let whole = p == PrivacyState::MaskedWhole;
            self.privacy.with_label_values(&["ok"]).set(!whole as i64);
            self.privacy.with_label_values(&["masked_whole"]).set(whole as i64);
        }
        for (name, s) in [("local", LinkState::Local), ("up", LinkState::Up), ("down", LinkState::Down)] {
            self.uplink.with_label_values(&[name]).set((s == link) as i64);
        }
    }

    /// Count one loop turn.
    pub fn observe(&self, t: &Turn) {
        match t.what {
            TurnKind::Processed { faces, labels, privacy } => {
                self.frames.inc();
                self.faces.inc_by(faces as u64);
                self.labels.inc_by(labels as u64);
                if privacy == PrivacyState::MaskedWhole {
                    self.masked_whole.inc();
                }
                for (s, secs) in STAGES.iter().zip(t.seconds) {
                    self.stage.with_label_values(&[*s]).observe(secs);
                }
                self.last_frame.set(unix_now());
                self.set_states(t.camera, Some(privacy), t.link);
            }
            TurnKind::Corrupt => {
                self.corrupt.inc();
                self.set_states(t.camera, None, t.link);
            }
            TurnKind::CameraAway => {
                self.camera_away.inc();
                self.set_states(t.camera, None, t.link);
            }
        }
        self.fps.set(t.fps as f64);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        self.reconnects.inc_by(t.reconnects.saturating_sub(seen.0));
        seen.0 = seen.0.max(t.reconnects);
        if let Some(u) = t.uplink {
            self.spool_pending.set(u.pending as i64);
            self.spool_dropped.inc_by(u.dropped.saturating_sub(seen.1));
            self.uplink_sent.inc_by(u.sent.saturating_sub(seen.2));
            seen.1 = seen.1.max(u.dropped);
            seen.2 = seen.2.max(u.sent);
        }
    }

    /// Every metric, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 << 10);
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding into memory");
        out
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Write `bytes` to `path` atomically: a temporary file beside it, then a rename, so a reader (node_exporter)
/// sees the old file or the new one, never half of one. The file is world-readable (0644); it holds counts only.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
    // node_exporter reads only *.prom: the temporary name does not end in .prom.
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        // Readable by node_exporter's user, whatever the service's umask (0077 in mien.service).
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, path)
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// The running outputs: the textfile writer and the HTTP endpoint, each on its own thread. Dropping it stops
/// them (the textfile gets one last write first).
pub struct Exporter {
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
    server: Option<(Arc<tiny_http::Server>, JoinHandle<()>)>,
}

/// The metrics endpoint could not be started.
#[derive(Debug, thiserror::Error)]
#[error("metrics.listen: cannot serve metrics on {addr}: {msg}")]
pub struct ExporterError {
    pub addr: String,
    pub msg: String,
}

impl Exporter {
    /// Start what `cfg` asks for. A textfile whose directory is missing or not writable is logged (with the
    /// field) and retried every interval: metrics never stop the camera. An endpoint that cannot bind is an
    /// error, since the profile asked for it and nothing would answer.
    pub fn start(metrics: Arc<Metrics>, cfg: &MetricsConfig) -> Result<Exporter, ExporterError> {
        let stop = Arc::new(AtomicBool::new(false));
        let server = if cfg.listen.is_empty() {
            None
        } else {
            let s = tiny_http::Server::http(&cfg.listen)
                .map_err(|e| ExporterError { addr: cfg.listen.clone(), msg: e.to_string() })?;
            let s = Arc::new(s);
            log::info!("metrics: serving http://{}/metrics", s.server_addr());
            let (srv, m) = (s.clone(), metrics.clone());
            let h = std::thread::Builder::new()
                .name("metrics-http".into())
                .spawn(move || serve(&srv, &m))
                .expect("spawn the metrics endpoint");
            Some((s, h))
        };
        let writer = if cfg.textfile.is_empty() {
            None
        } else {
            let path = PathBuf::from(&cfg.textfile);
            let every = Duration::from_millis(cfg.interval_ms as u64);
            let stop = stop.clone();
            log::info!("metrics: writing {} every {every:?}", path.display());
            Some(
                std::thread::Builder::new()
                    .name("metrics-file".into())
                    .spawn(move || write_loop(&path, every, &metrics, &stop))
                    .expect("spawn the metrics writer"),
            )
        };
        Ok(Exporter { stop, writer, server })
    }

    /// Where the endpoint listens (with the port the system chose, when the profile gave port 0).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().and_then(|(s, _)| s.server_addr().to_ip())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some((s, h)) = self.server.take() {
            s.unblock();
            let _ = h.join();
        }
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// Answer `GET /metrics` (and `/`) with the text format; anything else gets 404 or 405.
fn serve(server: &tiny_http::Server, metrics: &Metrics) {
    let content_type = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain; version=0.0.4; charset=utf-8"[..])
        .expect("a valid header");
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let resp = match (req.method(), path) {
            (tiny_http::Method::Get | tiny_http::Method::Head, "/metrics" | "/") => {
                tiny_http::Response::from_data(metrics.encode()).with_header(content_type.clone())
            }
            (tiny_http::Method::Get | tiny_http::Method::Head, _) => {
                tiny_http::Response::from_data(&b"not found: try /metrics\n"[..]).with_status_code(404)
            }
            _ => tiny_http::Response::from_data(&b"method not allowed\n"[..]).with_status_code(405),
        };
        if let Err(e) = req.respond(resp) {
            log::debug!("metrics: a scrape ended early: {e}");
        }
    }
}

fn write_loop(path: &Path, every: Duration, metrics: &Metrics, stop: &AtomicBool) {
    let mut failing = false;
    loop {
        match write_atomically(path, &metrics.encode()) {
            Ok(()) if failing => {
                log::info!("metrics.textfile: writing {} again", path.display());
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    log::warn!("metrics.textfile: cannot write {} ({e}); retrying every {every:?}", path.display());
                    failing = true;
                }
            }
        }
        // Sleep in short steps so a stop is quick; the last write comes after the stop, with the final counts.
        let mut slept = Duration::ZERO;
        while slept < every {
            if stop.load(Ordering::Relaxed) {
                let _ = write_atomically(path, &metrics.encode());
                return;
            }
            let step = Duration::from_millis(50).min(every - slept);
            std::thread::sleep(step);
            slept += step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.encode()).unwrap()
    }

    fn line<'a>(t: &'a str, series: &str) -> &'a str {
        t.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')).unwrap_or_else(|| panic!("no {series}"))
    }

    fn turn(what: TurnKind) -> Turn {
        Turn {
            what,
            seconds: [0.001, 0.02, 0.0004, 0.0008, 0.0],
            fps: 12.5,
            camera: CameraState::Ok,
            reconnects: 0,
            link: LinkState::Up,
            uplink: Some(UplinkCounters { pending: 3, dropped: 0, sent: 5, connected: true }),
        }
    }

    #[test]
    fn totals_from_the_source_and_uplink_become_counters_that_only_grow() {
        let m = Metrics::new(&[("detect".into(), "d.onnx".into(), "ab".into())]);
        m.observe(&turn(TurnKind::Processed { faces: 2, labels: 2, privacy: PrivacyState::Ok { regions: 2 } }));
        let mut t = turn(TurnKind::CameraAway);
        t.camera = CameraState::Lost;
        t.reconnects = 1;
        t.link = LinkState::Down;
        t.uplink = Some(UplinkCounters { pending: 7, dropped: 1, sent: 9, connected: false });
        m.observe(&t);
        // A sink that reports a smaller total (e.g. restarted) does not make a counter go back.
        t.uplink = Some(UplinkCounters { pending: 0, dropped: 0, sent: 2, connected: true });
        m.observe(&t);
        let s = text(&m);
        assert_eq!(line(&s, "mien_frames_total"), "mien_frames_total 1");
        assert_eq!(line(&s, "mien_faces_total"), "mien_faces_total 2");
        assert_eq!(line(&s, "mien_camera_away_turns_total"), "mien_camera_away_turns_total 2");
        assert_eq!(line(&s, "mien_camera_reconnects_total"), "mien_camera_reconnects_total 1");
        assert_eq!(line(&s, "mien_uplink_sent_total"), "mien_uplink_sent_total 9");
        assert_eq!(line(&s, "mien_spool_dropped_total"), "mien_spool_dropped_total 1");
        assert_eq!(line(&s, "mien_spool_pending"), "mien_spool_pending 0");
        assert_eq!(line(&s, "mien_camera_state{state=\"lost\"}"), "mien_camera_state{state=\"lost\"} 1");
        assert_eq!(line(&s, "mien_camera_state{state=\"ok\"}"), "mien_camera_state{state=\"ok\"} 0");
        assert_eq!(line(&s, "mien_uplink_state{state=\"down\"}"), "mien_uplink_state{state=\"down\"} 1");
        // The privacy state is the last frame's, kept while the camera is away.
        assert_eq!(line(&s, "mien_privacy_state{state=\"ok\"}"), "mien_privacy_state{state=\"ok\"} 1");
        assert_eq!(line(&s, "mien_stage_seconds_count{stage=\"detect\"}"), "mien_stage_seconds_count{stage=\"detect\"} 1");
        assert!(s.contains("mien_model_info{file=\"d.onnx\",role=\"detect\",sha256=\"ab\"} 1"), "{s}");
    }

    #[test]
    fn every_series_shows_before_the_first_frame() {
        let s = text(&Metrics::new(&[]));
        for stage in STAGES {
            assert!(s.contains(&format!("mien_stage_seconds_count{{stage=\"{stage}\"}} 0")), "{stage}");
        }
        for series in ["mien_privacy_state{state=\"masked_whole\"} 0", "mien_camera_state{state=\"ok\"} 1", "mien_frames_total 0"] {
            assert!(s.contains(series), "{series} in\n{s}");
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let ok = MetricsConfig::default();
        assert!(ok.validate().is_ok() && !ok.enabled());
        let field = |c: MetricsConfig| c.validate().unwrap_err().0;
        assert_eq!(field(MetricsConfig { listen: "9464".into(), ..ok.clone() }), "metrics.listen");
        assert_eq!(field(MetricsConfig { listen: "localhost:9464".into(), ..ok.clone() }), "metrics.listen");
        assert_eq!(field(MetricsConfig { interval_ms: 0, ..ok.clone() }), "metrics.interval_ms");
        assert_eq!(field(MetricsConfig { textfile: "/run/mien/".into(), ..ok.clone() }), "metrics.textfile");
        assert_eq!(field(MetricsConfig { textfile: "/run/mien/mien.txt".into(), ..ok.clone() }), "metrics.textfile");
        let good = MetricsConfig { textfile: "/run/mien/mien.prom".into(), listen: "[::1]:9464".into(), ..ok };
        assert!(good.validate().is_ok() && good.enabled());
    }

    #[test]
    fn the_textfile_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mien.prom");
        write_atomically(&p, b"a 1\n").unwrap();
        write_atomically(&p, b"a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 2\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644, "node_exporter's user reads it");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomically(&dir.path().join("missing/mien.prom"), b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
