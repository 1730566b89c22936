//! MQTT uplink (rumqttc, QoS 1) with a store-and-forward spool.
//!
//! Every label is appended to the spool first, then published by a network thread; a record leaves the spool
//! only when the broker's PUBACK for it has arrived. After a disconnect the thread starts a fresh session and
//! republishes every unacknowledged record in order, so a label can arrive twice (QoS 1's allowance) but is
//! never lost: each message carries the spool's `seq`, which makes duplicates detectable.
//!
//! Topics: `mien/<site>/<device>/expression` (labels) and the retained `mien/<site>/<device>/status`, with a
//! last will that turns it to `offline` when the device drops off.

use super::spool::{Fsync, Spool, SpoolConfig};
use super::{Health, LabelEvent, LabelSink, LinkState, SinkError, UplinkCounters};
use crate::vocab::Emotion;
use rumqttc::{Client, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS, TlsConfiguration, Transport};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Status message schema version.
pub const STATUS_VERSION: u32 = 2;
/// Fields of a label message on MQTT: the label fields plus the spool sequence number.
pub const MQTT_LABEL_FIELDS: [&str; 8] = ["v", "seq", "ts_ms", "frame", "face", "track", "label", "confidence"];
/// Fields of an aggregate message (`mien/<site>/<device>/aggregate`).
pub const AGGREGATE_FIELDS: [&str; 5] = ["v", "seq", "from_ms", "to_ms", "tracks"];
/// Fields of the status message.
/// v2 added `camera` ("ok" or "lost"), `camera_reconnects` and `privacy` ("ok" or "masking").
pub const STATUS_FIELDS: [&str; 13] = [
    "v",
    "state",
    "device",
    "firmware",
    "models",
    "fps",
    "uptime_s",
    "pending",
    "dropped",
    "sent",
    "camera",
    "camera_reconnects",
    "privacy",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Send labels over MQTT (otherwise only `output.labels`).
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub site: String,
    /// Device name in topics; empty = the host name.
    pub device: String,
    pub username: String,
    /// File holding the password (kept out of the profile).
    pub password_file: String,
    /// TLS with rustls (on by default: the CA file must be set).
    pub tls: bool,
    pub ca_file: String,
    pub client_cert: String,
    pub client_key: String,
    pub keep_alive_s: u32,
    pub status_interval_s: u32,
    /// Also publish, every this many seconds, the count of each label per track (0 = off).
    pub aggregate_s: u32,
    pub spool_dir: String,
    pub spool_max_bytes: u64,
    pub fsync: Fsync,
    pub fsync_interval_ms: u32,
    /// Seconds to wait for the broker to acknowledge everything when mien stops (the rest stays spooled).
    pub drain_s: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            host: "localhost".into(),
            port: 8883,
            site: "site".into(),
            device: String::new(),
            username: String::new(),
            password_file: String::new(),
            tls: true,
            ca_file: "/etc/mien/ca.pem".into(),
            client_cert: String::new(),
            client_key: String::new(),
            keep_alive_s: 15,
            status_interval_s: 30,
            aggregate_s: 0,
            spool_dir: "/var/lib/mien/spool".into(),
            spool_max_bytes: 16 << 20,
            fsync: Fsync::Interval,
            fsync_interval_ms: 1000,
            drain_s: 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("uplink.{field}: {msg}")]
pub struct MqttConfigError {
    pub field: &'static str,
    pub msg: String,
}

fn cfg_err(field: &'static str, msg: impl Into<String>) -> MqttConfigError {
    MqttConfigError { field, msg: msg.into() }
}

impl MqttConfig {
    pub fn device_name(&self) -> String {
        if !self.device.is_empty() {
            return self.device.clone();
        }
        std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "mien".into())
    }

    pub fn topic(&self, leaf: &str) -> String {
        format!("mien/{}/{}/{leaf}", self.site, self.device_name())
    }

    pub fn validate(&self) -> Result<(), MqttConfigError> {
        let topic_ok = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#', '\0']);
        if !topic_ok(&self.site) {
            return Err(cfg_err("site", format!("{:?} must be non-empty without / + #", self.site)));
        }
        if !self.device.is_empty() && !topic_ok(&self.device) {
            return Err(cfg_err("device", format!("{:?} must not contain / + #", self.device)));
        }
        if self.host.is_empty() {
            return Err(cfg_err("host", "must name the broker"));
        }
        if self.port == 0 {
            return Err(cfg_err("port", "must be 1..=65535"));
        }
        if !(1..=3600).contains(&self.keep_alive_s) {
            return Err(cfg_err("keep_alive_s", format!("{} is outside 1..=3600", self.keep_alive_s)));
        }
        if self.spool_max_bytes < 4096 {
            return Err(cfg_err("spool_max_bytes", format!("{} is under 4096", self.spool_max_bytes)));
        }
        if self.client_cert.is_empty() != self.client_key.is_empty() {
            return Err(cfg_err("client_key", "client_cert and client_key go together"));
        }
        Ok(())
    }

    /// Broker options, TLS included; every file problem names its field.
    pub fn options(&self, client_id: &str, will_payload: Vec<u8>) -> Result<MqttOptions, MqttConfigError> {
        self.validate()?;
        let mut o = MqttOptions::new(client_id, &self.host, self.port);
        o.set_keep_alive(Duration::from_secs(self.keep_alive_s as u64));
        o.set_clean_session(true);
        o.set_last_will(LastWill::new(self.topic("status"), will_payload, QoS::AtLeastOnce, true));
        if !self.username.is_empty() {
            let pw = if self.password_file.is_empty() {
                String::new()
            } else {
                std::fs::read_to_string(&self.password_file)
                    .map_err(|e| cfg_err("password_file", format!("{}: {e}", self.password_file)))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string()
            };
            o.set_credentials(&self.username, pw);
        }
        if self.tls {
            o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(self.rustls()?))));
        }
        Ok(o)
    }

    fn rustls(&self) -> Result<rustls::ClientConfig, MqttConfigError> {
        let read = |field: &'static str, p: &str| -> Result<Vec<u8>, MqttConfigError> {
            if p.is_empty() {
                return Err(cfg_err(field, "must name a PEM file when uplink.tls is on"));
            }
            std::fs::read(p).map_err(|e| cfg_err(field, format!("{p}: {e}")))
        };
        let ca = read("ca_file", &self.ca_file)?;
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<_> = rustls_pemfile::certs(&mut ca.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| cfg_err("ca_file", format!("{}: {e}", self.ca_file)))?;
        if certs.is_empty() {
            return Err(cfg_err("ca_file", format!("{}: no PEM certificate in it", self.ca_file)));
        }
        for c in certs {
            roots.add(c).map_err(|e| cfg_err("ca_file", format!("{}: {e}", self.ca_file)))?;
        }
        // ring, deprecated since rustls 0.23.48 for lacking post-quantum key exchange. It builds for every board
        // target here (armv7, aarch64 gnu and musl) with the cross C compiler alone; aws-lc-rs, the provider rustls
        // now recommends, builds the much larger AWS-LC C library per target, which every cross build would carry.
        // TLS 1.2/1.3 with X25519 is what a site broker speaks today; revisit when brokers offer hybrid key
        // exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| cfg_err("tls", e.to_string()))?
            .with_root_certificates(roots);
        if self.client_cert.is_empty() {
            return Ok(builder.with_no_client_auth());
        }
        let cert_pem = read("client_cert", &self.client_cert)?;
        let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| cfg_err("client_cert", format!("{}: {e}", self.client_cert)))?;
        if chain.is_empty() {
            return Err(cfg_err("client_cert", format!("{}: no PEM certificate in it", self.client_cert)));
        }
        let key_pem = read("client_key", &self.client_key)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| cfg_err("client_key", format!("{}: {e}", self.client_key)))?
            .ok_or_else(|| cfg_err("client_key", format!("{}: no PEM private key in it", self.client_key)))?;
        builder.with_client_auth_cert(chain, key).map_err(|e| cfg_err("client_key", format!("{}: {e}", self.client_key)))
    }
}

#[derive(Serialize)]
struct LabelMessage<'a> {
    seq: u64,
    #[serde(flatten)]
    event: &'a LabelEvent,
}

#[derive(Serialize)]
struct TrackCounts {
    track: u32,
    counts: BTreeMap<&'static str, u32>,
}

#[derive(Serialize)]
struct AggregateMessage {
    v: u32,
    seq: u64,
    from_ms: u64,
    to_ms: u64,
    tracks: Vec<TrackCounts>,
}

/// Label counts per track over one aggregation window; built from `LabelEvent`s only.
struct Aggregator {
    every: Duration,
    started: Instant,
    from_ms: u64,
    counts: BTreeMap<u32, [u32; 8]>,
}

impl Aggregator {
    fn add(&mut self, ev: &LabelEvent) {
        if self.counts.is_empty() {
            self.from_ms = ev.ts_ms();
        }
        self.counts.entry(ev.track()).or_insert([0; 8])[ev.label().index()] += 1;
    }

    /// The window's message if it is over (and anything was counted); starts the next window.
    fn take_due(&mut self, seq: u64) -> Option<AggregateMessage> {
        if self.started.elapsed() < self.every {
            return None;
        }
        self.started = Instant::now();
        if self.counts.is_empty() {
            return None;
        }
        let tracks = std::mem::take(&mut self.counts)
            .into_iter()
            .map(|(track, c)| TrackCounts {
                track,
                counts: Emotion::ALL.iter().filter(|e| c[e.index()] > 0).map(|e| (e.as_str(), c[e.index()])).collect(),
            })
            .collect();
        Some(AggregateMessage { v: 1, seq, from_ms: self.from_ms, to_ms: crate::frame::now_ms(), tracks })
    }
}

/// Spool records start with their kind, which picks the topic; the byte itself is never published.
const KIND_LABEL: u8 = b'L';
const KIND_AGGREGATE: u8 = b'A';

#[derive(Serialize)]
struct StatusMessage<'a> {
    v: u32,
    state: &'a str,
    device: &'a str,
    firmware: &'a str,
    models: &'a [(String, String)],
    fps: f32,
    uptime_s: u64,
    pending: u64,
    dropped: u64,
    sent: u64,
    camera: &'a str,
    camera_reconnects: u64,
    privacy: &'a str,
}

/// What the network thread and the pipeline share.
struct Shared {
    spool: Mutex<Spool>,
    frames: AtomicU64,
    /// Last reported health (camera lost, masking, reconnects) and whether it changed since the last status.
    health: Mutex<Option<Health>>,
    health_changed: AtomicBool,
    sent: AtomicU64,
    stop: AtomicBool,
    connected: AtomicBool,
}

pub struct MqttSink {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    drain: Duration,
    buf: Vec<u8>,
    aggregate: Option<Aggregator>,
}

impl MqttSink {
    /// Open the spool (recovering it) and start the network thread. Config and file errors come back here;
    /// a broker that cannot be reached is not an error: labels spool until it can.
    pub fn start(cfg: &MqttConfig, models: Vec<(String, String)>) -> anyhow::Result<MqttSink> {
        let device = cfg.device_name();
        let client_id = format!("mien-{}-{}", cfg.site, device);
        let firmware = env!("CARGO_PKG_VERSION").to_string();
        let offline = serde_json::to_vec(&StatusMessage {
            v: STATUS_VERSION,
            state: "offline",
            device: &device,
            firmware: &firmware,
            models: &models,
            fps: 0.0,
            uptime_s: 0,
            pending: 0,
            dropped: 0,
            camera: "unknown",
            camera_reconnects: 0,
            privacy: "unknown",
            sent: 0,
        })?;
        let opts = cfg.options(&client_id, offline)?;
        let (spool, rec) = Spool::open(SpoolConfig {
            dir: PathBuf::from(&cfg.spool_dir),
            max_bytes: cfg.spool_max_bytes,
            fsync: cfg.fsync,
            fsync_interval: Duration::from_millis(cfg.fsync_interval_ms as u64),
        })
        .map_err(|e| anyhow::anyhow!("uplink.spool_dir: {}: {e}", cfg.spool_dir))?;
        if rec.pending > 0 || rec.truncated_bytes > 0 {
            log::info!("spool: {} labels to deliver from before, {} bytes of torn tail cut", rec.pending, rec.truncated_bytes);
        }
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            frames: AtomicU64::new(0),
            health: Mutex::new(None),
            health_changed: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            connected: AtomicBool::new(false),
        });
        let net = NetThread {
            shared: shared.clone(),
            opts,
            labels_topic: cfg.topic("expression"),
            aggregate_topic: cfg.topic("aggregate"),
            status_topic: cfg.topic("status"),
            status_every: Duration::from_secs(cfg.status_interval_s.max(1) as u64),
            device,
            firmware,
            models,
            started: Instant::now(),
            broker: format!("{}:{}", cfg.host, cfg.port),
        };
        let thread = std::thread::Builder::new().name("mien-uplink".into()).spawn(move || net.run())?;
        log::info!("uplink: MQTT to {}:{} ({}), topic {}", cfg.host, cfg.port, if cfg.tls { "TLS" } else { "plain TCP" }, cfg.topic("expression"));
        let aggregate = (cfg.aggregate_s > 0).then(|| Aggregator {
            every: Duration::from_secs(cfg.aggregate_s as u64),
            started: Instant::now(),
            from_ms: 0,
            counts: BTreeMap::new(),
        });
        Ok(MqttSink {
            shared,
            thread: Some(thread),
            drain: Duration::from_secs(cfg.drain_s as u64),
            buf: Vec::with_capacity(256),
            aggregate,
        })
    }

    pub fn counters(&self) -> UplinkCounters {
        let s = self.shared.spool.lock().unwrap_or_else(|p| p.into_inner());
        UplinkCounters {
            pending: s.pending_len() as u64,
            dropped: s.dropped(),
            sent: self.shared.sent.load(Ordering::Relaxed),
            connected: self.shared.connected.load(Ordering::Relaxed),
        }
    }
}

impl LabelSink for MqttSink {
    fn send(&mut self, ev: &LabelEvent) -> Result<(), SinkError> {
        let mut spool = self.shared.spool.lock().unwrap_or_else(|p| p.into_inner());
        self.buf.clear();
        self.buf.push(KIND_LABEL);
        serde_json::to_writer(&mut self.buf, &LabelMessage { seq: spool.next_seq(), event: ev }).map_err(std::io::Error::other)?;
        spool.append(&self.buf)?;
        if let Some(a) = self.aggregate.as_mut() {
            a.add(ev);
        }
        Ok(())
    }

    fn frame_done(&mut self) {
        self.shared.frames.fetch_add(1, Ordering::Relaxed);
        if let Some(a) = self.aggregate.as_mut() {
            let mut spool = self.shared.spool.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(msg) = a.take_due(spool.next_seq()) {
                self.buf.clear();
                self.buf.push(KIND_AGGREGATE);
                if serde_json::to_writer(&mut self.buf, &msg).is_ok() {
                    if let Err(e) = spool.append(&self.buf) {
                        log::error!("uplink: cannot spool an aggregate: {e}");
                    }
                }
            }
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // Give the broker `drain` to acknowledge what is pending; whatever is left stays spooled for next time.
        let t = Instant::now();
        while t.elapsed() < self.drain && self.counters().pending > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut spool = self.shared.spool.lock().unwrap_or_else(|p| p.into_inner());
        spool.sync_now()?;
        Ok(())
    }

    fn health(&mut self, h: Health) {
        let mut cur = self.shared.health.lock().unwrap_or_else(|p| p.into_inner());
        let changed = cur.is_none_or(|c| (c.camera_ok, c.masking) != (h.camera_ok, h.masking));
        *cur = Some(h);
        if changed {
            self.shared.health_changed.store(true, Ordering::Relaxed);
        }
    }

    fn counters(&self) -> Option<UplinkCounters> {
        Some(MqttSink::counters(self))
    }

    fn link(&self) -> LinkState {
        if self.shared.connected.load(Ordering::Relaxed) {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // Connected: wait for the offline status and a clean DISCONNECT. Not connected: the thread may sit
            // in a connection attempt for seconds; the spool is already synced (flush), so let it go.
            if self.shared.connected.load(Ordering::Relaxed) {
                let _ = t.join();
            }
        }
    }
}

struct NetThread {
    shared: Arc<Shared>,
    opts: MqttOptions,
    labels_topic: String,
    aggregate_topic: String,
    status_topic: String,
    status_every: Duration,
    device: String,
    firmware: String,
    models: Vec<(String, String)>,
    started: Instant,
    broker: String,
}

/// Publishes in flight at once.
const WINDOW: usize = 64;

impl NetThread {
    fn status(&self, state: &str, fps: f32) -> Vec<u8> {
        let h = *self.shared.health.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.shared.spool.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_vec(&StatusMessage {
            v: STATUS_VERSION,
            state,
            device: &self.device,
            firmware: &self.firmware,
            models: &self.models,
            fps,
            uptime_s: self.started.elapsed().as_secs(),
            pending: s.pending_len() as u64,
            dropped: s.dropped(),
            sent: self.shared.sent.load(Ordering::Relaxed),
            camera: match h {
                None => "unknown",
                Some(h) if h.camera_ok => "ok",
                Some(_) => "lost",
            },
            camera_reconnects: h.map_or(0, |h| h.reconnects),
            privacy: match h {
                None => "unknown",
                Some(h) if h.masking => "masking",
                Some(_) => "ok",
            },
        })
        .unwrap_or_default()
    }

    fn run(self) {
        let mut backoff = Duration::from_millis(200);
        let mut fps_mark = (Instant::now(), 0u64);
        let mut fps = 0.0f32;
        while !self.shared.stop.load(Ordering::Relaxed) {
            // A fresh session each time: nothing half-sent survives in rumqttc's state, the spool is the truth.
            let (client, mut conn) = Client::new(self.opts.clone(), WINDOW * 2);
            let mut order: VecDeque<Option<u64>> = VecDeque::new(); // publishes queued, in order (None = status)
            let mut inflight: HashMap<u16, u64> = HashMap::new();
            let mut acked: BTreeSet<u64> = BTreeSet::new();
            let mut sent_upto = 0u64;
            let mut connected = false;
            let mut last_status = Instant::now();
            loop {
                if self.shared.stop.load(Ordering::Relaxed) {
                    if connected {
                        let _ = client.try_publish(&self.status_topic, QoS::AtLeastOnce, true, self.status("offline", 0.0));
                        let _ = client.try_disconnect();
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_millis(500) {
                            if !matches!(conn.recv_timeout(Duration::from_millis(50)), Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout)) {
                                break;
                            }
                        }
                    }
                    return;
                }
                // While connecting, wait out rumqttc's own connection timeout: dropping its poll future part-way
                // would restart the TCP/TLS handshake on every call and never finish on a slow network.
                let wait = if connected { Duration::from_millis(50) } else { Duration::from_secs(30) };
                match conn.recv_timeout(wait) {
                    Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                        connected = true;
                        self.shared.connected.store(true, Ordering::Relaxed);
                        backoff = Duration::from_millis(200);
                        let pending = self.shared.spool.lock().unwrap_or_else(|p| p.into_inner()).pending_len();
                        log::info!("uplink: connected to {}; {pending} labels to deliver", self.broker);
                        if client.try_publish(&self.status_topic, QoS::AtLeastOnce, true, self.status("online", fps)).is_ok() {
                            order.push_back(None);
                        }
                    }
                    Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        if let Some(Some(seq)) = order.pop_front() {
                            inflight.insert(pkid, seq);
                        }
                    }
                    Ok(Ok(Event::Incoming(Incoming::PubAck(a)))) => {
                        if let Some(seq) = inflight.remove(&a.pkid) {
                            acked.insert(seq);
                            self.shared.sent.fetch_add(1, Ordering::Relaxed);
                            let mut spool = self.shared.spool.lock().unwrap_or_else(|p| p.into_inner());
                            // Acknowledge the spool up to the first record not yet acked.
                            let mut through = None;
                            for r in spool.pending() {
                                if acked.remove(&r.seq) {
                                    through = Some(r.seq);
                                } else {
                                    break;
                                }
                            }
                            if let Some(s) = through {
                                if let Err(e) = spool.ack_through(s) {
                                    log::error!("uplink: spool ack failed: {e}");
                                }
                            }
                        }
                    }
                    Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    Ok(Err(e)) => {
                        self.shared.connected.store(false, Ordering::Relaxed);
                        let pending = self.shared.spool.lock().unwrap_or_else(|p| p.into_inner()).pending_len();
                        log::warn!("uplink: {} unreachable ({e}); {pending} labels spooled; retry in {backoff:?}", self.broker);
                        break;
                    }
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                }
                let mut spool = self.shared.spool.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = spool.sync_by_policy() {
                    log::error!("uplink: spool fsync failed: {e}");
                }
                if !connected {
                    continue;
                }
                // Publish what is pending and not yet in flight, oldest first, within the window.
                let queued = order.len() + inflight.len();
                let next: Vec<(u64, Vec<u8>)> = spool
                    .pending()
                    .filter(|r| r.seq > sent_upto)
                    .take(WINDOW.saturating_sub(queued))
                    .map(|r| (r.seq, r.payload.clone()))
                    .collect();
                drop(spool);
                for (seq, mut payload) in next {
                    let topic = match payload.first() {
                        Some(&KIND_AGGREGATE) => &self.aggregate_topic,
                        Some(&KIND_LABEL) => &self.labels_topic,
                        _ => {
                            // Not written by this version: skip it (acked as if sent) rather than publish junk.
                            log::error!("uplink: spool record {seq} has an unknown kind; dropped");
                            order.push_back(None);
                            sent_upto = seq;
                            acked.insert(seq);
                            continue;
                        }
                    };
                    payload.remove(0);
                    if client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_err() {
                        break;
                    }
                    order.push_back(Some(seq));
                    sent_upto = seq;
                }
                // Periodically, and at once when the camera or privacy state changed.
                if last_status.elapsed() >= self.status_every || self.shared.health_changed.swap(false, Ordering::Relaxed) {
                    let frames = self.shared.frames.load(Ordering::Relaxed);
                    let dt = fps_mark.0.elapsed().as_secs_f32();
                    fps = (frames - fps_mark.1) as f32 / dt.max(1e-3);
                    fps_mark = (Instant::now(), frames);
                    if client.try_publish(&self.status_topic, QoS::AtLeastOnce, true, self.status("online", fps)).is_ok() {
                        order.push_back(None);
                    }
                    last_status = Instant::now();
                }
            }
            drop(client);
            let t = Instant::now();
            while t.elapsed() < backoff && !self.shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
