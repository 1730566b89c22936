//! The pipeline only wires the stages: source -> detect -> (crops) -> privacy -> expression -> uplink.
//!
//! Order matters for privacy: faces are blurred in the frame buffer right after detection; crops for the
//! classifier are cut just before that and never leave process memory; savers and sinks come after.

use crate::board::BoardIo;
use crate::config::Config;
use crate::detect::{DetectError, Detections, FaceDetector, MAX_FACES};
use crate::display::{DisplayStage, FaceView, Status};
use crate::expression::{CropSet, ExpressionClassifier};
use crate::frame::Frame;
use crate::metrics::{Metrics, Turn, TurnKind};
use crate::privacy::{PrivacyGuard, Protected};
use crate::save::FrameSaver;
use crate::source::{FrameSource, SourceError};
use crate::track::{LabelSmoother, Tracker};
use crate::uplink::{Health, LabelEvent, LabelSink};
use crate::vocab::{CameraState, PrivacyState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A detection result from a worker: the frame back, its faces or why there are none, and the time it took.
type Detected = (Frame, Result<Detections, DetectError>, Duration);

/// Frames in flight per detection worker, at most (see `Workers`).
const QUEUED: usize = 2;

/// Detection on worker threads (`runtime.threads` > 1), each with its own fork of the detector (one optimized
/// model, a running state each). Frame k goes to worker k mod n and each worker answers in the order it was
/// asked, so reading the workers in turn gives the results in frame order. Each worker holds one frame, and a
/// second (`QUEUED`) while the next result is not there yet: then detection is what holds the frames back, and the
/// worker starts on its next frame while this thread blurs and classifies its last one. With one frame each, a
/// worker idled through that work on every frame (2 threads: 1.51-1.66x the frames/s of 1; with two, 1.70-1.82x).
/// When results come faster than the camera's frames, no second frame is taken, so a frame waits no longer (4
/// threads, a camera paced at 15 frames/s: 226-235 ms from capture to label, against 490-495 ms with a second frame
/// always queued).
struct Workers {
    jobs: Vec<mpsc::Sender<Frame>>,
    results: Vec<mpsc::Receiver<Detected>>,
    handles: Vec<JoinHandle<()>>,
    sent: usize,
    received: usize,
    /// Frame buffers to capture into (allocated once per frame in flight).
    free: Vec<Frame>,
    /// The next result in frame order, when `ready` took it off its channel before `recv`.
    next: Option<Detected>,
}

impl Workers {
    fn start(detectors: Vec<Box<dyn FaceDetector>>) -> Workers {
        let mut w =
            Workers { jobs: Vec::new(), results: Vec::new(), handles: Vec::new(), sent: 0, received: 0, free: Vec::new(), next: None };
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

    /// Whether the next result in frame order is there already (kept for `recv`), without waiting for it.
    fn ready(&mut self) -> bool {
        if self.next.is_none() && self.in_flight() > 0 {
            self.next = self.results[self.received % self.results.len()].try_recv().ok();
        }
        self.next.is_some()
    }

    fn recv(&mut self) -> anyhow::Result<Detected> {
        let n = self.results.len();
        let r = match self.next.take() {
            Some(r) => r,
            None => self.results[self.received % n]
                .recv()
                .map_err(|_| anyhow::anyhow!("detection worker {} stopped", self.received % n))?,
        };
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
    labeler: Labeler,
    tracker: Tracker,
    detect_timeout: Duration,
    seq: u64,
    status: Status,
    last_frame: Option<Instant>,
    on_turn: Option<Box<dyn FnMut() + Send>>,
    /// The fleet's metrics (`[metrics]`), counted after every loop turn.
    metrics: Option<Arc<Metrics>>,
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

/// A detection that came back after `limit` counts as failed: the frame is then masked whole.
fn within_budget(det: Result<(), DetectError>, took: Duration, limit: Duration) -> Result<(), DetectError> {
    det.and_then(|()| {
        if took > limit {
            Err(DetectError::Timeout { took_ms: took.as_millis() as u64, limit_ms: limit.as_millis() as u64 })
        } else {
            Ok(())
        }
    })
}

/// The technicians' copy of the blurred frame, if they asked for one (a failure is logged, not fatal).
fn save(saver: Option<&FrameSaver>, protected: &Protected) {
    if let Some(saver) = saver {
        if let Err(e) = saver.save(protected) {
            log::warn!("cannot save blurred frame: {e}");
        }
    }
}

/// After a frame: its rate, the camera and privacy states, and the sinks' health report.
fn update_status(
    st: &mut Status,
    last_frame: &mut Option<Instant>,
    state: PrivacyState,
    reconnects: u64,
    sink: &mut dyn LabelSink,
) {
    let now = Instant::now();
    if let Some(prev) = last_frame.replace(now) {
        let inst = 1.0 / now.duration_since(prev).as_secs_f32().max(1e-6);
        st.fps = if st.fps > 0.0 { 0.9 * st.fps + 0.1 * inst } else { inst };
    }
    st.camera = CameraState::Ok;
    st.privacy = state;
    sink.health(Health { camera_ok: true, masking: state == PrivacyState::MaskedWhole, reconnects });
    st.uplink = sink.link();
}

/// The classifier's side of a frame: the face crops (cut before the blur, wiped after use), which face each
/// crop belongs to, and each face's track.
struct Labeler {
    crops: CropSet,
    /// Per detected face: its crop's index in `crops`, or `None` when it is not classified.
    slots: Vec<Option<usize>>,
    track_ids: Vec<u32>,
    /// `expression.min_face`: smaller faces are blurred, not classified.
    min_face: u32,
    /// `expression.min_score`: less certain faces are blurred, not classified.
    min_score: f32,
    /// `expression.align`: crops follow each face's roll.
    align: bool,
    /// `expression.smoothing_ms`: each track's probabilities averaged over time.
    smoother: LabelSmoother,
}

impl Labeler {
    /// Cut the crops of the faces to classify from the frame, which is not blurred yet.
    fn cut(&mut self, classifier: Option<&dyn ExpressionClassifier>, frame: &Frame, dets: &Detections) {
        self.slots.clear();
        let Some(c) = classifier else { return };
        let roll = |d: &crate::detect::Detection| if self.align { d.roll } else { 0.0 };
        let faces = dets.iter().map(|d| (d.score >= self.min_score && !d.blur_only).then_some((&d.bbox, roll(d))));
        if let Err(e) = self.crops.extract(frame, faces, |b| c.crop_box(b), self.min_face, &mut self.slots) {
            log::warn!("frame {}: face crops failed: {e}", frame.seq);
            self.slots.clear();
        }
    }

    /// Classify the crops and send one label per face; the crops are wiped whatever happens. Returns the number
    /// of labels sent.
    fn classify_and_send(
        &mut self,
        classifier: Option<&mut Box<dyn ExpressionClassifier>>,
        frame: &Frame,
        sink: &mut dyn LabelSink,
        status: &mut Status,
    ) -> anyhow::Result<usize> {
        let mut labels = 0;
        if let Some(c) = classifier {
            for (face, slot) in self.slots.iter().enumerate() {
                let Some(slot) = slot else { continue };
                match c.classify(self.crops.get(*slot)) {
                    Ok(e) => {
                        let track = self.track_ids.get(face).copied().unwrap_or(u32::MAX);
                        let own = (e.label, e.confidence);
                        let (label, confidence) = self.smoother.smooth(track, frame.ts_ms, own, &e.probs);
                        let ev = LabelEvent::new(frame.ts_ms, frame.seq, face as u16, track, label, confidence);
                        if let Err(e) = sink.send(&ev) {
                            self.crops.wipe(); // no face pixels outlive the frame, even when it ends in an error
                            return Err(e.into());
                        }
                        if let Some(f) = status.faces.get_mut(face) {
                            f.label = Some((label, confidence));
                        }
                        labels += 1;
                    }
                    Err(e) => log::warn!("frame {} face {face}: {e}", frame.seq),
                }
            }
        }
        self.crops.wipe();
        sink.frame_done();
        Ok(labels)
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
        // runtime.threads: the loaded detector and threads - 1 forks of it (the same optimized model, their own
        // state), each on its own thread. A fork that fails only means fewer workers (the first one is loaded).
        let threads = cfg.runtime.threads.max(1) as usize;
        let workers = if threads > 1 && st.detector.is_ok() {
            let first = std::mem::replace(&mut st.detector, Err("on the detection workers".into())).expect("checked");
            let mut dets = vec![];
            let t0 = Instant::now();
            for _ in 1..threads {
                match first.fork() {
                    Ok(d) => dets.push(d),
                    Err(e) => log::warn!("detection worker not started: {e}"),
                }
            }
            dets.insert(0, first);
            log::info!("detection on {} threads (forked in {} ms)", dets.len(), t0.elapsed().as_millis());
            Some(Workers::start(dets))
        } else {
            None
        };
        Pipeline {
            frame: Frame::new(cfg.camera.width, cfg.camera.height),
            dets: Detections::new(),
            labeler: Labeler {
                crops: CropSet::new(MAX_FACES, cw, ch),
                slots: Vec::with_capacity(MAX_FACES),
                track_ids: Vec::with_capacity(MAX_FACES),
                min_face: cfg.expression.min_face,
                min_score: cfg.expression.min_score,
                align: cfg.expression.align,
                smoother: LabelSmoother::new(cfg.expression.smoothing_ms),
            },
            tracker: Tracker::new(cfg.privacy.hold_frames.max(5)),
            detect_timeout: Duration::from_millis(cfg.detect.timeout_ms as u64),
            seq: 0,
            status: Status::default(),
            last_frame: None,
            on_turn: None,
            metrics: None,
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
        let outcome = self.step_frame(timing)?;
        if let Some(m) = &self.metrics {
            if let Some(turn) = self.turn(timing, outcome) {
                m.observe(&turn);
            }
        }
        Ok(outcome)
    }

    /// A loop turn as the metrics count it (none at the end of the source).
    fn turn(&self, timing: &StepTiming, outcome: StepOutcome) -> Option<Turn> {
        let what = match outcome {
            StepOutcome::Processed { faces, labels, state } => TurnKind::Processed { faces, labels, privacy: state },
            StepOutcome::Corrupt => TurnKind::Corrupt,
            StepOutcome::Unavailable => TurnKind::CameraAway,
            StepOutcome::End => return None,
        };
        let t = timing;
        Some(Turn {
            what,
            seconds: [t.capture, t.detect, t.blur, t.classify, t.output].map(|d| d.as_secs_f64()),
            fps: self.status.fps,
            camera: self.status.camera,
            reconnects: self.st.source.reconnects(),
            link: self.status.uplink,
            uplink: self.st.sink.counters(),
        })
    }

    fn step_frame(&mut self, timing: &mut StepTiming) -> anyhow::Result<StepOutcome> {
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
        // One frame per worker; a second each only while the next result is not there yet (`Workers`).
        while !self.ended && w.in_flight() < QUEUED * w.jobs.len() && (w.in_flight() < w.jobs.len() || !w.ready()) {
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

    /// Everything after detection, for the frame in `self.frame` and its detections in `self.dets`, in this
    /// order: the time budget, the crops, the blur, the saver, the classifier and sinks, the screen and LED.
    fn finish(&mut self, det: Result<(), DetectError>, timing: &mut StepTiming) -> anyhow::Result<StepOutcome> {
        let det = within_budget(det, timing.detect, self.detect_timeout);
        if let Err(e) = &det {
            log::warn!("frame {}: {e}; masking the whole frame", self.frame.seq);
            self.dets.clear();
        }

        // Crops for the classifier are cut before the blur; then the blur, in place.
        let t = Instant::now();
        if det.is_ok() {
            self.labeler.cut(self.st.classifier.as_deref(), &self.frame, &self.dets);
        } else {
            self.labeler.slots.clear();
        }
        self.tracker.update(self.dets.iter().map(|d| &d.bbox), &mut self.labeler.track_ids);
        let protected = self.st.privacy.protect(&mut self.frame, det.as_ref().map(|()| &self.dets[..]));
        let state = protected.state();
        timing.blur = t.elapsed();

        let t = Instant::now();
        save(self.st.saver.as_ref(), &protected);
        timing.output = t.elapsed();

        // Classify the crops; only labels leave.
        self.status.faces.clear();
        for d in self.dets.iter() {
            let _ = self.status.faces.push(FaceView { bbox: d.bbox, label: None });
        }
        let t = Instant::now();
        let labels = self.labeler.classify_and_send(
            self.st.classifier.as_mut(),
            protected.frame(),
            &mut *self.st.sink,
            &mut self.status,
        )?;
        timing.classify = t.elapsed();

        // The board's own outputs: screen (blurred frame only), status LED, health for the status message.
        let t = Instant::now();
        let reconnects = self.st.source.reconnects();
        update_status(&mut self.status, &mut self.last_frame, state, reconnects, &mut *self.st.sink);
        present(&mut self.st.display, &self.st.board, Some(&protected), &self.status);
        timing.output += t.elapsed();

        self.count(timing, labels, state);
        Ok(StepOutcome::Processed { faces: self.dets.len(), labels, state })
    }

    /// The run's totals.
    fn count(&mut self, timing: &StepTiming, labels: usize, state: PrivacyState) {
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
    }

    /// Called after every loop turn of `run` (frame or not): the service watchdog's heartbeat.
    pub fn on_turn(&mut self, f: Box<dyn FnMut() + Send>) {
        self.on_turn = Some(f);
    }

    /// Count every loop turn into these metrics (`[metrics]`; see `metrics::Exporter`).
    pub fn with_metrics(&mut self, m: Arc<Metrics>) {
        self.metrics = Some(m);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelError;

    /// A detector that takes `ms` per frame and finds nothing: the workers' scheduling is what is tested here.
    struct Slow {
        ms: u64,
    }

    impl FaceDetector for Slow {
        fn detect(&mut self, _frame: &Frame, _out: &mut Detections) -> Result<(), DetectError> {
            std::thread::sleep(Duration::from_millis(self.ms));
            Ok(())
        }
        fn describe(&self) -> String {
            "slow".into()
        }
        fn sha256(&self) -> &str {
            ""
        }
        fn face_range(&self, _width: u32, _height: u32) -> (f32, f32) {
            (0.0, 0.0)
        }
        fn fork(&self) -> Result<Box<dyn FaceDetector>, ModelError> {
            Ok(Box::new(Slow { ms: self.ms }))
        }
    }

    #[test]
    fn workers_answer_in_frame_order_with_frames_queued() {
        // The first worker is 5x slower than the second: the results still come in the order the frames went in.
        let mut w = Workers::start(vec![Box::new(Slow { ms: 25 }), Box::new(Slow { ms: 5 })]);
        for seq in 0..QUEUED as u64 * 2 {
            let mut f = Frame::new(8, 8);
            f.seq = seq;
            w.send(f).unwrap();
        }
        assert_eq!(w.in_flight(), 4);
        let order: Vec<u64> = (0..4).map(|_| w.recv().unwrap().0.seq).collect();
        assert_eq!(order, [0, 1, 2, 3]);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn ready_says_whether_the_next_result_is_there_without_waiting_and_keeps_it() {
        let mut w = Workers::start(vec![Box::new(Slow { ms: 1000 })]);
        assert!(!w.ready(), "nothing in flight");
        let mut f = Frame::new(8, 8);
        f.seq = 7;
        let t = Instant::now();
        w.send(f).unwrap();
        assert!(!w.ready(), "the detection takes a second");
        assert!(t.elapsed() < Duration::from_millis(500), "ready() waited for the detection");
        // Then it comes (polled, so that a busy machine only makes the test slower).
        while !w.ready() {
            assert!(t.elapsed() < Duration::from_secs(30), "no result");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(t.elapsed() >= Duration::from_millis(1000));
        assert!(w.ready(), "the result is kept");
        assert_eq!(w.in_flight(), 1, "kept, not yet received");
        assert_eq!(w.recv().unwrap().0.seq, 7);
        assert_eq!(w.in_flight(), 0);
        assert!(!w.ready());
    }
}
