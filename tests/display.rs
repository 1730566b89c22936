//! The local display: golden images of the overlay (rendered into an in-memory canvas by the real drawing code),
//! and the real pipeline driving a screen: only blurred pixels reach it, and its state follows the pipeline's.
//!
//! Goldens live in `tests/golden/`; `MIEN_BLESS=1 cargo test --release --test display` rewrites them (look at
//! them before committing). `tests/golden/overlay_320x240.png` is the README's screenshot.

mod common;

use common::{images, load_frame, repo};
use mien::config::Config;
use mien::detect::{BlazeFace, BlazeFaceKind, Detection, FaceDetector};
use mien::display::{
    bar_height, preview_geometry, CameraState, Canvas, DisplayError, DisplayStage, FaceView, Overlay, Screen, Status,
};
use mien::expression::Emotion;
use mien::frame::{BBox, Frame, Rect};
use mien::pipeline::{Pipeline, StepOutcome, StepTiming, Stages};
use mien::pixels::Scaler;
use mien::privacy::{PrivacyGuard, PrivacyState};
use mien::source::{FrameSource, SourceError};
use mien::uplink::{LabelEvent, LabelSink, LinkState, SinkError};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Compare with a committed PNG (per channel within 3: JPEG decoding and resampling may use other SIMD paths
/// on another CPU); `MIEN_BLESS=1` writes it instead.
fn golden(canvas: &Canvas, name: &str) {
    let path = repo(&format!("tests/golden/{name}"));
    if std::env::var_os("MIEN_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        canvas.save_png(&path).unwrap();
        eprintln!("blessed {}", path.display());
        return;
    }
    let want = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (MIEN_BLESS=1 creates it)", path.display()))
        .into_rgb8();
    assert_eq!((want.width(), want.height()), (canvas.width(), canvas.height()), "{name}: size");
    let bad = want.as_raw().chunks(3).zip(canvas.rgb().chunks(3)).filter(|(a, b)| {
        a.iter().zip(b.iter()).any(|(x, y)| x.abs_diff(*y) > 3)
    });
    let n = bad.count();
    if n > 0 {
        let out = repo(&format!("target/golden-diff/{name}"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        canvas.save_png(&out).unwrap();
        panic!("{name}: {n} pixels differ from the golden; this run's image is {}", out.display());
    }
}

/// The first sample-clip frame, blurred by the real privacy stage around the real detector's faces.
fn blurred_sample() -> (Frame, Vec<BBox>) {
    let mut frame = load_frame(&images(&repo("samples/clip"))[0]);
    let cfg = Config::embedded_default();
    // One fixed detector pass (full range, one letterbox): the golden is about drawing, not about which detection
    // setup the default profile has.
    let mut det = BlazeFace::load(&repo("models/blazeface_full_range.onnx"), BlazeFaceKind::FullRange, 0.5, 0.3).unwrap();
    let mut found = mien::detect::Detections::new();
    det.detect(&frame, &mut found).unwrap();
    assert!(!found.is_empty(), "the sample frame has faces");
    // Boxes on a 4-pixel grid: the golden must not move with the last bit of a float.
    let snap = |v: f32| (v / 4.0).round() * 4.0;
    let dets: Vec<Detection> = found
        .iter()
        .map(|d| Detection::new(BBox { x0: snap(d.bbox.x0), y0: snap(d.bbox.y0), x1: snap(d.bbox.x1), y1: snap(d.bbox.y1) }, d.score))
        .collect();
    let mut guard = PrivacyGuard::new(cfg.privacy.clone());
    let state = guard.protect(&mut frame, Ok(&dets)).state();
    assert!(matches!(state, PrivacyState::Ok { regions } if regions == dets.len()));
    (frame, dets.iter().map(|d| d.bbox).collect())
}

fn status(boxes: &[BBox], labels: &[(Emotion, f32)]) -> Status {
    let mut st = Status { fps: 14.9, uplink: LinkState::Up, ..Default::default() };
    for (i, b) in boxes.iter().enumerate() {
        st.faces.push(FaceView { bbox: *b, label: labels.get(i).copied() }).unwrap();
    }
    st
}

/// Run the overlay on a frame that privacy has seen (the only way to get a `Protected`).
fn draw(canvas: &mut Canvas, frame: &mut Frame, dets: Option<&[Detection]>, st: &Status) {
    let mut guard = PrivacyGuard::new(Config::embedded_default().privacy);
    let err = mien::detect::DetectError::Inference("test".into());
    let p = guard.protect(frame, dets.ok_or(&err));
    Overlay::default().draw(canvas, Some(&p), st);
}

#[test]
fn overlay_golden_preview_with_labels() {
    let (mut frame, boxes) = blurred_sample();
    let st = status(&boxes, &[(Emotion::Happiness, 0.91), (Emotion::Neutral, 0.78), (Emotion::Surprise, 0.66)]);
    let mut canvas = Canvas::new(320, 240);
    // The frame is blurred already; protecting it again around the same boxes changes nothing more.
    let dets: Vec<Detection> = boxes.iter().map(|b| Detection::new(*b, 0.9)).collect();
    draw(&mut canvas, &mut frame, Some(&dets), &st);
    golden(&canvas, "overlay_320x240.png");
    // The bars say what the status says: green privacy bar on top, green uplink bar at the bottom.
    assert_eq!(canvas.pixel(1, 1), [40, 200, 90]);
    assert_eq!(canvas.pixel(1, 238), [40, 200, 90]);
}

#[test]
fn overlay_golden_faults_without_preview() {
    let mut canvas = Canvas::new(240, 240);
    let mut st = status(
        &[BBox { x0: 10.0, y0: 10.0, x1: 60.0, y1: 60.0 }, BBox { x0: 100.0, y0: 10.0, x1: 120.0, y1: 30.0 }],
        &[(Emotion::Sadness, 0.55)],
    );
    st.privacy = PrivacyState::MaskedWhole;
    st.uplink = LinkState::Down;
    st.fps = 3.2;
    Overlay::default().draw(&mut canvas, None, &st);
    golden(&canvas, "overlay_fault_240x240.png");
    assert_eq!(canvas.pixel(1, 1), [230, 50, 50], "privacy fault bar is red");
    assert_eq!(canvas.pixel(1, 238), [230, 50, 50], "uplink-down bar is red");
    // Large screens get the larger font (same layout).
    let mut big = Canvas::new(800, 480);
    st.camera = CameraState::Lost;
    Overlay::default().draw(&mut big, None, &st);
    golden(&big, "overlay_nocamera_800x480.png");
    assert_eq!(big.pixel(1, 1), [240, 170, 30], "no-camera bar is amber");
}

/// A screen that keeps what it is shown.
#[derive(Clone)]
struct Memory(Arc<Mutex<Vec<Canvas>>>, (u32, u32));

impl Screen for Memory {
    fn size(&self) -> (u32, u32) {
        self.1
    }
    fn present(&mut self, c: &Canvas) -> Result<(), DisplayError> {
        self.0.lock().unwrap().push(c.clone());
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

struct Clip {
    frames: Vec<Frame>,
    i: usize,
    raw: Arc<Mutex<Vec<Frame>>>,
}

impl FrameSource for Clip {
    fn next_frame(&mut self, out: &mut Frame) -> Result<bool, SourceError> {
        let Some(f) = self.frames.get(self.i) else { return Ok(false) };
        self.i += 1;
        out.ensure_size(f.width, f.height);
        out.data.copy_from_slice(&f.data);
        self.raw.lock().unwrap().push(f.clone());
        Ok(true)
    }
    fn describe(&self) -> String {
        "clip".into()
    }
}

struct Null;
impl LabelSink for Null {
    fn send(&mut self, _: &LabelEvent) -> Result<(), SinkError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn preview_of(frame: &Frame, w: u32, h: u32) -> Vec<u8> {
    let mut out = vec![0; (w * h * 3) as usize];
    Scaler::default().crop_resize(frame, frame.full_rect(), &mut out, w, h).unwrap();
    out
}

/// Mean absolute difference between the canvas's preview area and an RGB block, over `r` (canvas coords).
fn diff(c: &Canvas, px: Rect, block: &[u8], r: Rect) -> f64 {
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in r.y0..r.y1 {
        for x in r.x0..r.x1 {
            let i = (((y - px.y0) * px.width() + (x - px.x0)) * 3) as usize;
            let p = c.pixel(x, y);
            sum += (0..3).map(|k| p[k].abs_diff(block[i + k]) as u64).sum::<u64>();
            n += 3;
        }
    }
    sum as f64 / n.max(1) as f64
}

fn run_pipeline(detector: bool) -> (Vec<Canvas>, Vec<Frame>, Status) {
    let cfg = Config::embedded_default();
    let frames: Vec<Frame> = images(&repo("samples/clip")).iter().take(3).map(|p| load_frame(p)).collect();
    let raw = Arc::new(Mutex::new(Vec::new()));
    let shown = Arc::new(Mutex::new(Vec::new()));
    let screen = Memory(shown.clone(), (320, 240));
    let mut dcfg = cfg.clone();
    dcfg.detect.model = repo(&cfg.detect.model).display().to_string();
    dcfg.expression.model = repo(&cfg.expression.model).display().to_string();
    if let Some(b) = dcfg.detect.blur_also.as_mut() {
        b.model = repo(&b.model).display().to_string();
    }
    let stages = Stages {
        source: Box::new(Clip { frames, i: 0, raw: raw.clone() }),
        detector: if detector {
            mien::detect::load_for_camera(&dcfg.detect, dcfg.camera.width, dcfg.camera.height)
        } else {
            Err("test: no detector".into())
        },
        // No hold: the frame shown is blurred where the last frame's boxes are (the status lists them), not also
        // where earlier frames' were.
        privacy: PrivacyGuard::new(mien::privacy::PrivacyConfig { hold_frames: 0, ..cfg.privacy.clone() }),
        classifier: mien::expression::load_configured(&dcfg.expression),
        sink: Box::new(Null),
        saver: None,
        display: Some(DisplayStage::new(Box::new(screen), Duration::ZERO, Arc::new(AtomicBool::new(true)))),
        board: None,
    };
    let mut p = Pipeline::new(stages, &cfg);
    let mut t = StepTiming::default();
    while let StepOutcome::Processed { .. } = p.step(&mut t).unwrap() {}
    let st = p.status().clone();
    let shown = shown.lock().unwrap().clone();
    let raw = raw.lock().unwrap().clone();
    (shown, raw, st)
}

#[test]
fn the_screen_only_ever_sees_blurred_faces() {
    let (shown, raw, st) = run_pipeline(true);
    assert_eq!(shown.len(), raw.len(), "one redraw per frame at refresh 0");
    assert!(!st.faces.is_empty() && st.faces.iter().any(|f| f.label.is_some()), "faces and labels reach the screen");
    let c = shown.last().unwrap();
    let f = raw.last().unwrap();
    // The preview sits centred between the bars.
    let lh = bar_height(c);
    let (pw, ph, s) = preview_geometry(320, 240 - 2 * lh, f.width, f.height);
    let px = Rect { x0: (320 - pw) / 2, y0: lh + (240 - 2 * lh - ph) / 2, x1: 0, y1: 0 };
    let px = Rect { x1: px.x0 + pw, y1: px.y0 + ph, ..px };
    let raw_preview = preview_of(f, pw, ph);
    let mut checked = 0;
    for face in &st.faces {
        // The middle of each face (inside the drawn outline and label).
        let b = face.bbox;
        let (cx, cy) = ((b.x0 + b.x1) / 2.0 * s, (b.y0 + b.y1) / 2.0 * s);
        let half = (b.width().min(b.height()) * s * 0.25).max(2.0);
        let r = Rect {
            x0: px.x0 + (cx - half) as u32,
            y0: px.y0 + (cy - half) as u32,
            x1: px.x0 + (cx + half) as u32,
            y1: px.y0 + (cy + half) as u32,
        };
        if r.width() < 4 {
            continue;
        }
        let d = diff(c, px, &raw_preview, r);
        assert!(d > 4.0, "face at {b:?}: the screen shows it too close to the raw frame (mean diff {d:.1})");
        checked += 1;
    }
    assert!(checked > 0, "no face large enough to check");
    // Away from every box (false detections are blurred too) the preview is the frame itself (the blur is local):
    // the first 28x18 patch of the preview, scanning from its top-left corner, clear of every box and its margin.
    let clear = |r: &Rect| {
        let b = BBox { x0: r.x0 as f32 / s, y0: r.y0 as f32 / s, x1: r.x1 as f32 / s, y1: r.y1 as f32 / s };
        st.faces.iter().all(|f| f.bbox.expand(0.6).iou(&b) == 0.0)
    };
    let patch = (0..ph.saturating_sub(20))
        .step_by(2)
        .flat_map(|y| (0..pw.saturating_sub(30)).step_by(2).map(move |x| Rect { x0: x + 2, y0: y + 2, x1: x + 30, y1: y + 20 }))
        .find(|r| clear(r))
        .expect("a patch of the preview clear of every box");
    let d = diff(c, px, &raw_preview, Rect { x0: px.x0 + patch.x0, y0: px.y0 + patch.y0, x1: px.x0 + patch.x1, y1: px.y0 + patch.y1 });
    assert!(d < 4.0, "background at {patch:?} differs from the frame (mean diff {d:.1}): preview misplaced?");
    // Privacy bar green.
    assert_eq!(c.pixel(1, 1), [40, 200, 90]);
}

#[test]
fn without_a_detector_the_screen_shows_the_masked_frame_and_says_so() {
    let (shown, raw, st) = run_pipeline(false);
    assert_eq!(st.privacy, PrivacyState::MaskedWhole);
    assert!(st.faces.is_empty());
    let c = shown.last().unwrap();
    assert_eq!(c.pixel(1, 1), [230, 50, 50], "red privacy bar");
    // The whole preview is one flat colour (the mask): no pixel of the scene.
    let fill = Config::embedded_default().privacy.fill_rgb;
    let lh = bar_height(c);
    let (pw, ph, _) = preview_geometry(320, 240 - 2 * lh, raw[0].width, raw[0].height);
    let (x0, y0) = ((320 - pw) / 2, lh + (240 - 2 * lh - ph) / 2);
    for y in (y0 + 2..y0 + ph - 2).step_by(7) {
        for x in (x0 + 2..x0 + pw - 2).step_by(7) {
            assert_eq!(c.pixel(x, y), fill, "preview pixel ({x},{y}) is not the mask colour");
        }
    }
    assert!(!raw.is_empty());
}

#[test]
fn screen_size_and_missing_devices_are_reported() {
    let e = mien::display::fb::Framebuffer::open(Path::new("/dev/fb-none")).err().unwrap().to_string();
    assert!(e.contains("/dev/fb-none"));
}
