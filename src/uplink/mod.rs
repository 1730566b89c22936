//! Uplink: the only data that leaves the device. `LabelEvent` can only be built from a label and numbers,
//! so there is no way to put pixels, crops or embeddings into anything a sink sends.

pub mod mqtt;
pub mod spool;

use crate::vocab::Emotion;

pub use crate::vocab::LinkState;
use serde::Serialize;
use std::io::Write;

/// Schema version of the label message; bump it when a field changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One expression label for one face in one frame. Fields are private: the constructor takes only numbers
/// and an `Emotion`, so a `LabelEvent` cannot carry anything derived from pixels beyond the label itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LabelEvent {
    v: u32,
    ts_ms: u64,
    frame: u64,
    face: u16,
    track: u32,
    label: Emotion,
    confidence: f32,
}

impl LabelEvent {
    pub fn new(ts_ms: u64, frame: u64, face: u16, track: u32, label: Emotion, confidence: f32) -> Self {
        let confidence = if confidence.is_finite() { (confidence.clamp(0.0, 1.0) * 1e4).round() / 1e4 } else { 0.0 };
        LabelEvent { v: SCHEMA_VERSION, ts_ms, frame, face, track, label, confidence }
    }
    pub fn frame(&self) -> u64 {
        self.frame
    }
    pub fn face(&self) -> u16 {
        self.face
    }
    pub fn track(&self) -> u32 {
        self.track
    }
    pub fn label(&self) -> Emotion {
        self.label
    }
    pub fn confidence(&self) -> f32 {
        self.confidence
    }
    pub fn ts_ms(&self) -> u64 {
        self.ts_ms
    }
}

/// The exact set of fields a label message has (schema v1). Tests check every output against it.
pub const LABEL_FIELDS: [&str; 7] = ["v", "ts_ms", "frame", "face", "track", "label", "confidence"];

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("label sink write failed: {0}")]
    Io(#[from] std::io::Error),
}


/// What the camera and privacy stages are doing, reported to the sinks after every loop turn (the MQTT status
/// message carries it, and a change is published at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub camera_ok: bool,
    /// Frames are being masked whole (no working detector).
    pub masking: bool,
    /// Times the camera came back after being lost.
    pub reconnects: u64,
}

/// The MQTT uplink's counters (spool and broker), for tests, the status message and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkCounters {
    /// Labels in the spool, not yet acknowledged by the broker.
    pub pending: u64,
    /// Labels dropped because the spool was full.
    pub dropped: u64,
    /// Labels the broker acknowledged.
    pub sent: u64,
    pub connected: bool,
}

pub trait LabelSink: Send {
    fn send(&mut self, ev: &LabelEvent) -> Result<(), SinkError>;
    /// Called once per processed frame (for rates in status messages).
    fn frame_done(&mut self) {}
    fn flush(&mut self) -> Result<(), SinkError>;
    fn link(&self) -> LinkState {
        LinkState::Local
    }
    fn health(&mut self, _h: Health) {}
    /// The spool and broker counters, for a sink that has them.
    fn counters(&self) -> Option<UplinkCounters> {
        None
    }
}

/// Several sinks at once (e.g. MQTT and a local JSON-lines file).
pub struct TeeSink(pub Vec<Box<dyn LabelSink>>);

impl LabelSink for TeeSink {
    fn send(&mut self, ev: &LabelEvent) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.send(ev))
    }
    fn frame_done(&mut self) {
        self.0.iter_mut().for_each(|s| s.frame_done())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.flush())
    }
    fn link(&self) -> LinkState {
        self.0.iter().map(|s| s.link()).max().unwrap_or(LinkState::Local)
    }
    fn health(&mut self, h: Health) {
        self.0.iter_mut().for_each(|s| s.health(h))
    }
    fn counters(&self) -> Option<UplinkCounters> {
        self.0.iter().filter_map(|s| s.counters()).reduce(|a, b| UplinkCounters {
            pending: a.pending + b.pending,
            dropped: a.dropped + b.dropped,
            sent: a.sent + b.sent,
            connected: a.connected && b.connected,
        })
    }
}

/// JSON lines, one label per line, to stdout or a file.
pub struct JsonLinesSink<W: Write + Send> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write + Send> JsonLinesSink<W> {
    pub fn new(out: W) -> Self {
        JsonLinesSink { out, line: Vec::with_capacity(160) }
    }
}

impl<W: Write + Send> LabelSink for JsonLinesSink<W> {
    fn send(&mut self, ev: &LabelEvent) -> Result<(), SinkError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, ev).map_err(std::io::Error::other)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        Ok(())
    }
    /// Each frame's labels reach the file before the next frame: a crash or a kill loses at most one frame's.
    fn frame_done(&mut self) {
        if let Err(e) = self.out.flush() {
            log::error!("labels: write failed: {e}");
        }
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush()?;
        Ok(())
    }
}

/// Open the sink the config names: `-` is stdout, anything else a file (appended to).
pub fn open_sink(target: &str) -> std::io::Result<Box<dyn LabelSink>> {
    if target == "-" {
        Ok(Box::new(JsonLinesSink::new(std::io::stdout())))
    } else {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(target)?;
        Ok(Box::new(JsonLinesSink::new(std::io::BufWriter::new(f))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_link_of_several_sinks_wins() {
        struct Fixed(LinkState);
        impl LabelSink for Fixed {
            fn send(&mut self, _: &LabelEvent) -> Result<(), SinkError> {
                Ok(())
            }
            fn flush(&mut self) -> Result<(), SinkError> {
                Ok(())
            }
            fn link(&self) -> LinkState {
                self.0
            }
        }
        let tee = |v: &[LinkState]| TeeSink(v.iter().map(|&l| Box::new(Fixed(l)) as Box<dyn LabelSink>).collect()).link();
        assert_eq!(tee(&[]), LinkState::Local);
        assert_eq!(tee(&[LinkState::Local, LinkState::Up]), LinkState::Up);
        assert_eq!(tee(&[LinkState::Down, LinkState::Up, LinkState::Local]), LinkState::Down);
    }

    #[test]
    fn json_line_has_exactly_the_schema_fields() {
        let mut buf = Vec::new();
        {
            let mut s = JsonLinesSink::new(&mut buf);
            s.send(&LabelEvent::new(1_700_000_000_000, 42, 1, 7, Emotion::Happiness, 0.912345)).unwrap();
        }
        let line = String::from_utf8(buf).unwrap();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut want = LABEL_FIELDS.to_vec();
        want.sort();
        let mut got = keys.clone();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(v["label"], "happiness");
        assert_eq!(v["confidence"].as_f64().unwrap(), 0.9123);
        assert_eq!(v["v"], SCHEMA_VERSION);
    }
}
