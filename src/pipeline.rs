//! The pipeline only wires the stages: source -> detect -> (crops) -> privacy -> expression -> uplink.
//!
//! Order matters for privacy: faces are blurred in the frame buffer right after detection; crops for the
//! classifier are cut just before that and never leave process memory; savers and sinks come after.

use crate::board::BoardIo;
use crate::config::Config;
use crate::detect::{DetectError, Detections, FaceDetector, MAX_FACES};
use crate::display::{CameraState, DisplayStage, FaceView, Status};
use crate::expression::{self, CropSet, ExpressionClassifier};
use crate::frame::Frame;
use crate::privacy::{PrivacyGuard, PrivacyState, Protected};
use crate::save::FrameSaver;
use crate::source::{FrameSource, SourceError};
use crate::track::Tracker;
use crate::uplink::{Health, LabelEvent, LabelSink};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A detection result from a worker: the frame back, its faces or why there are none, and the time it took.
type Detected = (Frame, Result<Detections, DetectError>, Duration);

/// Detection on worker threads (`runtime.threads` > 1), each with its own detector. Frame k goes to worker
/// k mod n and each worker answers in the order it was asked, so reading the workers in turn gives the results
/// in frame order.
struct Workers {
    jobs: Vec<mpsc::Sender<Frame>>,
    results: Vec<mpsc::Receiver<Detected>>,
    handles: Vec<JoinHandle<()>>,
    sent: usize,
    received: usize,
    /// Frame buffers to capture into (allocated once per frame in flight).
    free: Vec<Frame>,
}

impl Workers {
    fn start(detectors: Vec<Box<dyn FaceDetector>>) -> Workers {
        let mut w = Workers { jobs: Vec::new(), results: Vec::new(), handles: Vec::new(), sent: 0, received: 0, free: Vec::new() };
        for (i, mut det) in detectors.into_iter().enumerate() {
            let (job_tx, job_rx) = mpsc::channel::<Frame>();
            let (res_tx, res_rx) = mpsc::channel::<Detected>();
            let h = std::thread::Builder::new()
                .name(format!("detect-{i}"))
                .spawn(move || {
                    for frame in job_rx {
                        let t = Instant::now();
                        let mut found = Detections::new();
                        let r = det.detect(&frame, &mut found).map(|()| found);
                        if res_tx.send((frame, r, t.elapsed())).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn a detection worker");
            w.jobs.push(job_tx);
            w.results.push(res_rx);
            w.handles.push(h);
        }
        w
    }

    fn in_flight(&self) -> usize {
        self.sent - self.received
    }

    fn send(&mut self, f: Frame) -> anyhow::Result<()> {
        let n = self.jobs.len();
        self.jobs[self.sent % n].send(f).map_err(|_| anyhow::anyhow!("detection worker {} stopped", self.sent % n))?;
        self.sent += 1;
        Ok(())
    }

    fn recv(&mut self) -> anyhow::Result<Detected> {
        let n = self.results.len();
        let r = self.results[self.received % n]
            .recv()
            .map_err(|_| anyhow::anyhow!("detection worker {} stopped", self.received % n))?;
        self.received += 1;
        Ok(r)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs.clear(); // the workers' loops end
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Time spent in each stage for one frame.
#[derive(Debug, Default, Clone, Copy)]
pub struct StepTiming {
    pub capture: Duration,
    pub detect: Duration,
    pub blur: Duration,
    pub classify: Duration,
    pub output: Duration,
}

/// What happened to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Processed { faces: usize, labels: usize, state: PrivacyState },
    /// The frame was unusable and was dropped unseen.
    Corrupt,
    /// The camera is away; the source is reconnecting.
    Unavailable,
    End,
}

#[derive(Debug, Default, Clone)]
pub struct RunStats {
    pub frames: u64,
    pub masked_whole: u64,
    pub faces: u64,
    pub labels: u64,
    pub corrupt: u64,
    pub unavailable: u64,
    pub total: StepTiming,
}

pub struct Stages {
    pub source: Box<dyn FrameSource>,
    /// `Err` (with why) when no detector could be loaded: every frame is then masked whole.
    pub detector: Result<Box<dyn FaceDetector>, String>,
    pub privacy: PrivacyGuard,
    pub classifier: Option<Box<dyn ExpressionClassifier>>,
    pub sink: Box<dyn LabelSink>,
    pub saver: Option<FrameSaver>,
    /// The board's screen (takes only blurred frames), if it has one.
    pub display: Option<DisplayStage>,
    /// The board's status LED and button, if it has them.
    pub board: Option<BoardIo>,
}

pub struct Pipeline {
    st: Stages,
    frame: Frame,
    dets: Detections,
    crops: CropSet,
    slots: Vec<Option<usize>>,
    track_ids: Vec<u32>,
    tracker: Tracker,
    detect_timeout: Duration,
    min_face: u32,
    /// `expression.min_score`: less certain faces are blurred, not classified.
    min_score: f32,
    /// `expression.align`: crops follow each face's roll.
    align: bool,
    seq: u64,
    status: Status,
    last_frame: Option<Instant>,
    on_turn: Option<Box<dyn FnMut() + Send>>,
    /// Detection workers (`runtime.threads` > 1), and whether the source has ended while frames were in flight.
    workers: Option<Workers>,
    ended: bool,
    pub stats: RunStats,
}

/// The board's own outputs: the screen (a blurred frame, or none when the camera is away) and the status LED.
/// A free function over the two fields, so it can run while `frame` still borrows the pipeline's buffer.
fn present(display: &mut Option<DisplayStage>, board: &Option<BoardIo>, frame: Option<&Protected>, st: &Status) {
    if let Some(d) = display.as_mut() {
        d.update(frame, st);
    }
    if let Some(b) = board {
        b.show(st);
    }
}

/// Load the detector the config names, ready for the camera's frame size. A failure here is not fatal: privacy
/// masks every frame instead.
pub fn load_detector(cfg: &Config) -> Result<Box<dyn FaceDetector>, String> {
    let mut d = crate::detect::load(&cfg.detect).map_err(|e| e.to_string())?;
    d.prepare(cfg.camera.width, cfg.camera.height).map_err(|e| e.to_string())?;
    Ok(d)
}

/// Load the expression classifier; `None` (logged) when disabled or unloadable: blur still runs.
pub fn load_classifier(cfg: &Config) -> Option<Box<dyn ExpressionClassifier>> {
    if !cfg.expression.enabled {
        return None;
    }
    match expression::load(cfg.expression.kind, Path::new(&cfg.expression.model)) {
        Ok(c) => {
            let missing: Vec<&str> = c.missing_classes().iter().map(|e| e.as_str()).collect();
            if !missing.is_empty() {
                log::info!("expression model cannot output: {}", missing.join(", "));
            }
            Some(c)
        }
        Err(e) => {
            log::error!("expression disabled: {e}");
            None
        }
    }
}

impl Pipeline {
    pub fn new(mut st: Stages, cfg: &Config) -> Self {
        let (cw, ch) = st.classifier.as_ref().map(|c| c.input_size()).unwrap_or((1, 1));
        match &st.detector {
            Ok(d) => log::info!("detector: {}", d.describe()),
            Err(e) => log::error!("PRIVACY FAULT: no face detector ({e}); every frame will be masked whole"),
        }
        if let Some(c) = &st.classifier {
            log::info!("expression: {}", c.describe());
        }
        log::info!("source: {}", st.source.describe());
        // runtime.threads: the loaded detector and threads - 1 more, each on its own thread. A detector that
        // fails to load here only means fewer workers (the first one loaded already).
        let threads = cfg.runtime.threads.max(1) as usize;
        let workers = if threads > 1 && st.detector.is_ok() {
            let first = std::mem::replace(&mut st.detector, Err("on the detection workers".into())).expect("checked");
            let mut dets = vec![first];
            for _ in 1..threads {
                match load_detector(cfg) {
                    Ok(d) => dets.push(d),
                    Err(e) => log::warn!("detection worker not started: {e}"),
                }
            }
            log::info!("detection on {} threads", dets.len());
            Some(Workers::start(dets))
        } else {
            None
        };
        Pipeline {
            frame: Frame::new(cfg.camera.width, cfg.camera.height),
            dets: Detections::new(),
            crops: CropSet::new(MAX_FACES, cw, ch),
            slots: Vec::with_capacity(MAX_FACES),
            track_ids: Vec::with_capacity(MAX_FACES),
            tracker: Tracker::new(cfg.privacy.hold_frames.max(5)),
            detect_timeout: Duration::from_millis(cfg.detect.timeout_ms as u64),
            min_face: cfg.expression.min_face,
            min_score: cfg.expression.min_score,
            align: cfg.expression.align,
            seq: 0,
            status: Status::default(),
            last_frame: None,
            on_turn: None,
            workers,
            ended: false,
            stats: RunStats::default(),
            st,
        }
    }

    /// Process one frame end to end. With detection workers (`runtime.threads` > 1) the frames up to one per
    /// worker are captured ahead and detected in parallel; each comes back in capture order and goes through
    /// the rest of the stages (blur first) one at a time, so outputs keep their order and no frame leaves
    /// before its blur.
    pub fn step(&mut self, timing: &mut StepTiming) -> anyhow::Result<StepOutcome> {
        *timing = StepTiming::default();
        if self.workers.is_some() {
            return self.step_parallel(timing);
        }
        let t = Instant::now();
        let got = self.st.source.next_frame(&mut self.frame);
        timing.capture = t.elapsed();
        match got {
            Ok(true) => {}
            Ok(false) => return Ok(StepOutcome::End),
            Err(SourceError::Corrupt(why)) => {
                log::warn!("dropped a corrupt frame: {why}");
                self.stats.corrupt += 1;
                return Ok(StepOutcome::Corrupt);
            }
            Err(SourceError::Unavailable(_)) => return Ok(self.camera_away()),
            Err(SourceError::Fatal(why)) => anyhow::bail!("source: {why}"),
        }
        self.frame.seq = self.seq;
        self.seq += 1;

        // Detect. Failure, a blown time budget or a missing detector all become a DetectError.
        let t = Instant::now();
        self.dets.clear();
        let det: Result<(), DetectError> = match self.st.detector.as_mut() {
            Ok(d) => d.detect(&self.frame, &mut self.dets),
            Err(why) => Err(DetectError::Inference(format!("no detector: {why}"))),
        };
        timing.detect = t.elapsed();
        self.finish(det, timing)
    }

    /// `step` with detection workers.
    fn step_parallel(&mut self, timing: &mut StepTiming) -> anyhow::Result<StepOutcome> {
        let w = self.workers.as_mut().expect("workers");
        let t = Instant::now();
        while !self.ended && w.in_flight() < w.jobs.len() {
            let mut f = w.free.pop().unwrap_or_else(|| Frame::new(self.frame.width, self.frame.height));
            match self.st.source.next_frame(&mut f) {
                Ok(true) => {
                    f.seq = self.seq;
                    self.seq += 1;
                    w.send(f)?;
                }
                Ok(false) => {
                    self.ended = true;
                    w.free.push(f);
                }
                Err(SourceError::Corrupt(why)) => {
                    log::warn!("dropped a corrupt frame: {why}");
                    self.stats.corrupt += 1;
                    w.free.push(f);
                }
                Err(SourceError::Unavailable(_)) => {
                    w.free.push(f);
                    if w.in_flight() == 0 {
                        timing.capture = t.elapsed();
                        return Ok(self.camera_away());
                    }
                    break; // the frames in flight go out first
                }
                Err(SourceError::Fatal(why)) => anyhow::bail!("source: {why}"),
            }
        }
        timing.capture = t.elapsed();
        if w.in_flight() == 0 {
            return Ok(StepOutcome::End);
        }
        let (frame, found, took) = w.recv()?;
        w.free.push(std::mem::replace(&mut self.frame, frame));
        self.dets.clear();
        let det = found.map(|d| self.dets = d);
        timing.detect = took;
        self.finish(det, timing)
    }

    /// The camera is away: nothing to blur or send; the screen, LED and status say so.
    fn camera_away(&mut self) -> StepOutcome {
        self.stats.unavailable += 1;
        self.status.camera = CameraState::Lost;
        self.status.faces.clear();
        self.status.fps = 0.0;
        self.last_frame = None;
        let reconnects = self.st.source.reconnects();
        self.st.sink.health(Health { camera_ok: false, masking: false, reconnects });
        self.status.uplink = self.st.sink.link();
        present(&mut self.st.display, &self.st.board, None, &self.status);
        StepOutcome::Unavailable
    }

    /// Everything after detection, for the frame in `self.frame` and its detections in `self.dets`: the time
    /// budget, crops, blur, saver, classifier, sinks, screen and LED.
    fn finish(&mut self, det: Result<(), DetectError>, timing: &mut StepTiming) -> anyhow::Result<StepOutcome> {
        let det = det.and_then(|()| {
            if timing.detect > self.detect_timeout {
                Err(DetectError::Timeout {
                    took_ms: timing.detect.as_millis() as u64,
                    limit_ms: self.detect_timeout.as_millis() as u64,
                })
            } else {
                Ok(())
            }
        });
        if let Err(e) = &det {
            log::warn!("frame {}: {e}; masking the whole frame", self.frame.seq);
            self.dets.clear();
        }

        // Crops for the classifier, cut before the blur; then blur in place.
        let t = Instant::now();
        self.slots.clear();
        if let (Ok(()), Some(c)) = (&det, self.st.classifier.as_ref()) {
            if let Err(e) = self.crops.extract(
                &self.frame,
                self.dets
                    .iter()
                    .map(|d| (d.score >= self.min_score).then_some((&d.bbox, if self.align { d.roll } else { 0.0 }))),
                |b| c.crop_box(b),
                self.min_face,
                &mut self.slots,
            ) {
                log::warn!("frame {}: face crops failed: {e}", self.frame.seq);
                self.slots.clear();
            }
        }
        self.tracker.update(self.dets.iter().map(|d| &d.bbox), &mut self.track_ids);
        let protected = self.st.privacy.protect(&mut self.frame, det.as_ref().map(|()| &self.dets[..]));
        let state = protected.state();
        timing.blur = t.elapsed();

        let t = Instant::now();
        if let Some(saver) = &self.st.saver {
            if let Err(e) = saver.save(&protected) {
                log::warn!("cannot save blurred frame: {e}");
            }
        }
        timing.output = t.elapsed();
        let (seq, ts) = (protected.frame().seq, protected.frame().ts_ms);
        self.status.faces.clear();
        for d in self.dets.iter() {
            let _ = self.status.faces.push(FaceView { bbox: d.bbox, label: None });
        }

        // Classify the crops; only labels leave.
        let t = Instant::now();
        let mut labels = 0;
        if let Some(c) = self.st.classifier.as_mut() {
            for (face, slot) in self.slots.iter().enumerate() {
                let Some(slot) = slot else { continue };
                match c.classify(self.crops.get(*slot)) {
                    Ok(e) => {
                        let track = self.track_ids.get(face).copied().unwrap_or(u32::MAX);
                        let ev = LabelEvent::new(ts, seq, face as u16, track, e.label, e.confidence);
                        if let Err(e) = self.st.sink.send(&ev) {
                            self.crops.wipe(); // no face pixels outlive the frame, even when it ends in an error
                            return Err(e.into());
                        }
                        if let Some(f) = self.status.faces.get_mut(face) {
                            f.label = Some((e.label, e.confidence));
                        }
                        labels += 1;
                    }
                    Err(e) => log::warn!("frame {seq} face {face}: {e}"),
                }
            }
        }
        self.crops.wipe();
        self.st.sink.frame_done();
        timing.classify = t.elapsed();

        // The board's own outputs: screen (blurred frame only) and status LED.
        let now = Instant::now();
        if let Some(prev) = self.last_frame.replace(now) {
            let inst = 1.0 / now.duration_since(prev).as_secs_f32().max(1e-6);
            self.status.fps = if self.status.fps > 0.0 { 0.9 * self.status.fps + 0.1 * inst } else { inst };
        }
        self.status.camera = CameraState::Ok;
        self.status.privacy = state;
        let reconnects = self.st.source.reconnects();
        self.st.sink.health(Health { camera_ok: true, masking: state == PrivacyState::MaskedWhole, reconnects });
        self.status.uplink = self.st.sink.link();
        present(&mut self.st.display, &self.st.board, Some(&protected), &self.status);
        timing.output += now.elapsed();

        self.stats.frames += 1;
        self.stats.faces += self.dets.len() as u64;
        self.stats.labels += labels as u64;
        if state == PrivacyState::MaskedWhole {
            self.stats.masked_whole += 1;
        }
        let tt = &mut self.stats.total;
        tt.capture += timing.capture;
        tt.detect += timing.detect;
        tt.blur += timing.blur;
        tt.classify += timing.classify;
        tt.output += timing.output;
        Ok(StepOutcome::Processed { faces: self.dets.len(), labels, state })
    }

    /// Called after every loop turn of `run` (frame or not): the service watchdog's heartbeat.
    pub fn on_turn(&mut self, f: Box<dyn FnMut() + Send>) {
        self.on_turn = Some(f);
    }

    /// What the screen and LED show now.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Run until the source ends or `max_frames` frames (0 = no limit) went through.
    pub fn run(&mut self, max_frames: u64) -> anyhow::Result<RunStats> {
        self.run_until(max_frames, &AtomicBool::new(false))
    }

    /// As `run`, and also stop (flushing the sinks) once `stop` is set, e.g. by SIGTERM.
    pub fn run_until(&mut self, max_frames: u64, stop: &AtomicBool) -> anyhow::Result<RunStats> {
        let mut timing = StepTiming::default();
        loop {
            if max_frames > 0 && self.stats.frames >= max_frames {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                log::info!("stopping on request after {} frames", self.stats.frames);
                break;
            }
            let outcome = self.step(&mut timing)?;
            if let Some(f) = self.on_turn.as_mut() {
                f();
            }
            if outcome == StepOutcome::End {
                break;
            }
        }
        self.st.sink.flush()?;
        Ok(self.stats.clone())
    }
}
