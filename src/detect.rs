//! Face detection: a `FaceDetector` trait returning boxes in frame coordinates, and MediaPipe BlazeFace in tract,
//! either as one pass over the letterboxed frame (`BlazeFace`) or over an image pyramid (`Pyramid`, the default:
//! every face from `detect.min_face` pixels up to one that fills the frame), or mien's own small-face network
//! (`mienface::MienFace`).
//!
//! Each detector owns its model's pre-processing and decoding (anchors, NMS), as Frigate's detector plugins do;
//! the pipeline only sees `Detection`s.

use crate::frame::{BBox, Frame};
use crate::model::{self, ModelError, Runnable};
use crate::pixels::Scaler;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

pub mod mienface;
pub use mienface::MienFace;

/// Which detector a profile runs (`detect.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectorKind {
    /// One pass of short-range BlazeFace over the letterboxed frame (faces within ~2 m).
    ShortRange,
    /// One pass of full-range BlazeFace over the letterboxed frame (~5 m).
    FullRange,
    /// Short-range BlazeFace over an image pyramid: every face from `detect.min_face` up to the whole frame.
    Pyramid,
    /// mien's own network (`models/mien_face.onnx`) over the frame at its own resolution, and smaller passes for
    /// larger faces: every face from `detect.min_face` up to the whole frame.
    MienFace,
}

/// The `[detect]` section of a profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub kind: DetectorKind,
    pub model: String,
    pub score_threshold: f32,
    pub nms_iou: f32,
    /// A detection slower than this is treated as failed: the frame is masked whole.
    pub timeout_ms: u32,
    /// `pyramid`: the smallest face (its height in camera pixels) the stage is laid out to find. Smaller costs
    /// more: the first level of the pyramid is the frame scaled by `PYRAMID_MIN_MODEL_FACE / min_face`.
    pub min_face: u32,
    /// `[detect.blur_also]`: a second detector on every frame whose faces are blurred too but never labelled
    /// (`BlurAlso`). It shares `nms_iou` and `timeout_ms` (both detectors within it).
    pub blur_also: Option<BlurAlsoConfig>,
    /// Not a key of the section: the privacy stage's `privacy.margin`, copied in by `Config::from_toml`, so that
    /// `BlurAlso` leaves out only second boxes that the blur around a first one covers. 0 (a config built in
    /// code) leaves out only boxes wholly inside a first box.
    #[serde(skip)]
    pub cover_margin: f32,
}

/// The `[detect.blur_also]` section: which second detector, its model, its threshold and the smallest face it
/// is laid out for (default: `detect.min_face`). The first detector's `min_face` then only needs to reach the
/// faces worth a label (`expression.min_face`), and the second covers the smaller ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlurAlsoConfig {
    pub kind: DetectorKind,
    pub model: String,
    pub score_threshold: f32,
    #[serde(default)]
    pub min_face: Option<u32>,
    /// The largest face (px tall) this detector is laid out for and kept from (default: up to the whole frame).
    /// Its boxes taller than this are left out: faces that large are the first detector's alone. mien-face's
    /// passes for large faces box coffee cups and shirts at the default's threshold (docs/privacy.md, "Background
    /// blurred by mistake"), where the pyramid is measured to need no help.
    #[serde(default)]
    pub max_face: Option<u32>,
    /// This detector runs first, and the first one (a `pyramid`) runs its finest level, most of its time, only in
    /// windows around this one's boxes (`Pyramid::guided`). A face in that level's own range (from `detect.min_face`
    /// to about 4x it) that this detector does not box is then found by neither.
    #[serde(default)]
    pub guide: bool,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            kind: DetectorKind::Pyramid,
            model: "models/blazeface_short_range.onnx".into(),
            score_threshold: 0.4,
            nms_iou: 0.3,
            timeout_ms: 500,
            min_face: 16,
            blur_also: None,
            cover_margin: 0.0,
        }
    }
}

impl DetectConfig {
    /// The labelling path alone (`mien eval`, `mien adapt`, the expression examples): only the first detector's
    /// faces are classified, so `[detect.blur_also]` is left out.
    pub fn labelling(&self) -> DetectConfig {
        DetectConfig { blur_also: None, ..self.clone() }
    }

    /// Check every value; `Err((field, why))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.model.is_empty() {
            return Err(("detect.model", "must name an ONNX file".into()));
        }
        if !(self.score_threshold > 0.0 && self.score_threshold < 1.0) {
            return Err(("detect.score_threshold", format!("{} is outside (0, 1)", self.score_threshold)));
        }
        if !(self.nms_iou > 0.0 && self.nms_iou < 1.0) {
            return Err(("detect.nms_iou", format!("{} is outside (0, 1)", self.nms_iou)));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err(("detect.timeout_ms", format!("{} is outside 1..=60000", self.timeout_ms)));
        }
        if !(8..=4096).contains(&self.min_face) {
            return Err(("detect.min_face", format!("{} is outside 8..=4096", self.min_face)));
        }
        if let Some(b) = &self.blur_also {
            if b.model.is_empty() {
                return Err(("detect.blur_also.model", "must name an ONNX file".into()));
            }
            if !(b.score_threshold > 0.0 && b.score_threshold < 1.0) {
                return Err(("detect.blur_also.score_threshold", format!("{} is outside (0, 1)", b.score_threshold)));
            }
            if let Some(m) = b.min_face.filter(|m| !(8..=4096).contains(m)) {
                return Err(("detect.blur_also.min_face", format!("{m} is outside 8..=4096")));
            }
            let min_face = b.min_face.unwrap_or(self.min_face);
            if let Some(m) = b.max_face.filter(|&m| !(min_face..=65_535).contains(&m)) {
                return Err(("detect.blur_also.max_face", format!("{m} is outside {min_face} (its min_face)..=65535")));
            }
            if b.guide && self.kind != DetectorKind::Pyramid {
                return Err(("detect.blur_also.guide", format!("guides a pyramid only, detect.kind is {:?}", self.kind)));
            }
        }
        Ok(())
    }
}

/// Load the detector a `[detect]` section names (with its `[detect.blur_also]` second detector, if any: either
/// failing to load fails the whole stage, and privacy masks every frame).
pub fn load(cfg: &DetectConfig) -> Result<Box<dyn FaceDetector>, ModelError> {
    let (thr, iou) = (cfg.score_threshold, cfg.nms_iou);
    Ok(match &cfg.blur_also {
        None => load_one(cfg.kind, &cfg.model, (cfg.min_face, f32::INFINITY), thr, iou)?,
        Some(b) => {
            let first: Box<dyn FaceDetector> = if b.guide && cfg.kind == DetectorKind::Pyramid {
                Box::new(Pyramid::load(Path::new(&cfg.model), cfg.min_face, thr, iou)?.guided())
            } else {
                load_one(cfg.kind, &cfg.model, (cfg.min_face, f32::INFINITY), thr, iou)?
            };
            let max_face = b.max_face.map_or(f32::INFINITY, |m| m as f32);
            let second = load_one(b.kind, &b.model, (b.min_face.unwrap_or(cfg.min_face), max_face), b.score_threshold, iou)?;
            Box::new(BlurAlso::new(first, second, cfg.cover_margin).up_to(max_face).guided_by_second(b.guide))
        }
    })
}

/// One detector; `faces` is (min_face, max_face), the sizes a multi-scale detector lays its levels out for
/// (`f32::INFINITY`: up to the whole frame).
fn load_one(kind: DetectorKind, model: &str, faces: (u32, f32), thr: f32, iou: f32) -> Result<Box<dyn FaceDetector>, ModelError> {
    let path = Path::new(model);
    let (min_face, max_face) = faces;
    Ok(match kind {
        DetectorKind::Pyramid => Box::new(Pyramid::load(path, min_face, thr, iou)?.up_to(max_face)),
        DetectorKind::MienFace => Box::new(MienFace::load(path, min_face, thr, iou)?.up_to(max_face)),
        DetectorKind::ShortRange => Box::new(BlazeFace::load(path, BlazeFaceKind::ShortRange, thr, iou)?),
        DetectorKind::FullRange => Box::new(BlazeFace::load(path, BlazeFaceKind::FullRange, thr, iou)?),
    })
}

/// Two detectors on every frame (`[detect.blur_also]`): the first's faces are blurred and labelled as usual; the
/// second's are appended blurred-only (`Detection::blur_only`) unless the blur of one of the first's faces covers
/// them already: privacy takes the union, the labels only the first detector's calibrated scores. Either failing
/// fails the frame; more faces together than `MAX_FACES` fail it too (fail-closed).
///
/// A second box is left out only when it lies wholly inside one of the first's boxes grown by `cover_margin`,
/// the margin the privacy stage blurs around every box (`privacy.margin`, passed in as
/// `DetectConfig::cover_margin`): every pixel of it is blurred either way, whatever face it is. (Until 2026-12-07
/// a box overlapping one of the first's by IoU 0.5, or half inside it, was left out: a box twice the first's
/// height, half inside it, then kept its far part clear beyond the margin.)
///
/// With `up_to(max_face)` (`detect.blur_also.max_face`), second boxes taller than `max_face` are left out too: the
/// first detector alone answers for faces that large.
///
/// With `guided_by_second(true)` (`detect.blur_also.guide`) the second runs first and the first is given all its
/// boxes, of every height, to look around (`FaceDetector::detect_guided`).
pub struct BlurAlso {
    first: Box<dyn FaceDetector>,
    second: Box<dyn FaceDetector>,
    cover_margin: f32,
    max_face: f32,
    guide: bool,
    extra: Detections,
}

impl BlurAlso {
    pub fn new(first: Box<dyn FaceDetector>, second: Box<dyn FaceDetector>, cover_margin: f32) -> Self {
        let cover_margin = cover_margin.max(0.0);
        BlurAlso { first, second, cover_margin, max_face: f32::INFINITY, guide: false, extra: Detections::new() }
    }

    /// Keep only second boxes up to `max_face` px tall.
    pub fn up_to(self, max_face: f32) -> Self {
        BlurAlso { max_face, ..self }
    }

    /// Run the second detector first and give its boxes to the first (`FaceDetector::detect_guided`).
    pub fn guided_by_second(self, guide: bool) -> Self {
        BlurAlso { guide, ..self }
    }
}

impl FaceDetector for BlurAlso {
    fn detect(&mut self, frame: &Frame, out: &mut Detections) -> Result<(), DetectError> {
        if self.guide {
            self.second.detect(frame, &mut self.extra)?;
            self.first.detect_guided(frame, &self.extra, out)?;
        } else {
            self.first.detect(frame, out)?;
            self.second.detect(frame, &mut self.extra)?;
        }
        let (firsts, m, max_face) = (out.len(), self.cover_margin, self.max_face);
        let is_new = |d: &Detection, out: &Detections| {
            d.bbox.height() <= max_face && !out[..firsts].iter().any(|f| f.bbox.expand(m).contains(&d.bbox))
        };
        // Counted before any is added (no allocation per frame): over MAX_FACES together fails the frame.
        let added = self.extra.iter().filter(|d| is_new(d, out)).count();
        if firsts + added > MAX_FACES {
            return Err(DetectError::TooManyFaces { found: firsts + added, max: MAX_FACES });
        }
        for d in self.extra.iter() {
            if is_new(d, out) {
                let _ = out.push(Detection { blur_only: true, roll: 0.0, ..*d });
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} + blurred only: {}", self.first.describe(), self.second.describe())
    }

    fn sha256(&self) -> &str {
        self.first.sha256()
    }

    fn second(&self) -> Option<&dyn FaceDetector> {
        Some(self.second.as_ref())
    }

    /// The union of both ranges.
    fn face_range(&self, width: u32, height: u32) -> (f32, f32) {
        let (a, b) = (self.first.face_range(width, height), self.second.face_range(width, height));
        (a.0.min(b.0), a.1.max(b.1.min(self.max_face)))
    }

    fn prepare(&mut self, width: u32, height: u32) -> Result<(), ModelError> {
        self.first.prepare(width, height)?;
        self.second.prepare(width, height)
    }

    fn fork(&self) -> Result<Box<dyn FaceDetector>, ModelError> {
        let me = BlurAlso::new(self.first.fork()?, self.second.fork()?, self.cover_margin).up_to(self.max_face);
        Ok(Box::new(me.guided_by_second(self.guide)))
    }
}

/// Load the detector the config names, ready for the camera's frame size. A failure here is not fatal to the
/// caller: privacy masks every frame instead, so the error comes back as the reason to log.
pub fn load_for_camera(cfg: &DetectConfig, width: u32, height: u32) -> Result<Box<dyn FaceDetector>, String> {
    let mut d = load(cfg).map_err(|e| e.to_string())?;
    d.prepare(width, height).map_err(|e| e.to_string())?;
    Ok(d)
}

/// Most faces one frame can hold. A frame with more is not passed on with some of them left clear: detection
/// fails with `DetectError::TooManyFaces` and privacy masks the frame whole (fail-closed). Counted with both
/// detectors' false boxes: at 128 (until 2026-12-07) frames of 54-119 small faces were masked whole, since
/// mien-face boxes chins and eye corners too (136 boxes for 54 faces); at 256 the scale sweep's 640x480 frames of
/// up to 135 faces are blurred face by face. Each slot costs a crop buffer per labelling worker (6.9 KB at 48x48).
pub const MAX_FACES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
    /// In-plane rotation of the face (head roll), radians, from the detector's two eye keypoints: the angle of
    /// the eye line against the image's x axis, in (-pi/2, pi/2], positive when the face leans clockwise on
    /// screen (y points down). 0 for an upright face, a face too small for its eyes to tell, or a detector
    /// without keypoints.
    pub roll: f32,
    /// Found by `[detect.blur_also]`'s second detector only: blurred, never classified.
    pub blur_only: bool,
    /// The face's keypoints in frame pixels, in MediaPipe's order: the eye on the image's left, the other eye,
    /// the nose tip, the mouth centre (`KP_*`). `None` from a detector without keypoints (mien-face). The crop
    /// is still drawn from the box: a crop fitted to the keypoints read FER+ faces no better
    /// (`mien eval --measure-crop`, models/expression/EXPERIMENTS.md "Crop and tilt").
    pub keypoints: Option<Keypoints>,
}

/// See `Detection::keypoints`.
pub type Keypoints = [[f32; 2]; 4];
/// Indices into `Keypoints`.
pub const KP_EYE_A: usize = 0;
pub const KP_EYE_B: usize = 1;
pub const KP_NOSE: usize = 2;
pub const KP_MOUTH: usize = 3;

impl Detection {
    /// An upright face (roll 0) without keypoints.
    pub fn new(bbox: BBox, score: f32) -> Self {
        Detection { bbox, score, roll: 0.0, blur_only: false, keypoints: None }
    }
}

/// Smallest face, as its height in model input pixels, that short-range BlazeFace finds reliably when it runs
/// fully convolutionally over a larger input (the pyramid's levels). Measured on 100-150 colour close-ups from
/// `../shared/data/site-colour` pasted on grey, one input scale at a time (recall 0.73 at 18 px, 0.98 at 20,
/// 0.993 at 22, 1.00 from 24 to 160, 0.96 at 192, 0.77 at 240): the pyramid keeps a margin at both ends.
/// `examples/scale_sweep.rs` checks the whole stage against an independent detector.
pub const PYRAMID_MIN_MODEL_FACE: f32 = 26.0;
/// Largest face (model input pixels) one pyramid level is trusted with (see `PYRAMID_MIN_MODEL_FACE`).
pub const PYRAMID_MAX_MODEL_FACE: f32 = 150.0;
/// Each pyramid level is this many times smaller than the one before: the levels' face ranges (26-150 model
/// pixels each, a factor 5.8) overlap by 45%, so a face between two levels is inside both.
pub const PYRAMID_STEP: f32 = 4.0;
/// Full range over its 192x192 letterbox, measured as above: recall 0.93 at 19 model px, 0.97 at 29, 1.00 at 38.
const FULL_RANGE_MIN_MODEL_FACE: f32 = 38.0;

/// Eye keypoints closer than this in the detector's input (model pixels: 192 for full range) give no roll. A
/// pixel of keypoint error is then up to 5 degrees; on the sample clip's 45-pixel faces (eyes ~5 model pixels
/// apart) upright heads read as 11-23 degrees.
pub const MIN_EYE_DISTANCE: f32 = 12.0;

/// The roll of the line through two eye points, whichever order they come in: (-pi/2, pi/2].
pub fn eye_line_roll(a: [f32; 2], b: [f32; 2]) -> f32 {
    let r = (b[1] - a[1]).atan2(b[0] - a[0]);
    let pi = std::f32::consts::PI;
    if r > pi / 2.0 {
        r - pi
    } else if r <= -pi / 2.0 {
        r + pi
    } else {
        r
    }
}

pub type Detections = heapless::Vec<Detection, MAX_FACES>;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("detector inference failed: {0}")]
    Inference(String),
    #[error("detector took {took_ms} ms, over its {limit_ms} ms budget")]
    Timeout { took_ms: u64, limit_ms: u64 },
    #[error("{found} faces in one frame, more than the {max} the stage keeps")]
    TooManyFaces { found: usize, max: usize },
    #[error("detector pre-processing failed: {0}")]
    Preprocess(#[from] crate::pixels::PixelError),
}

impl DetectError {
    fn inference(e: impl std::fmt::Display) -> Self {
        DetectError::Inference(format!("{e:#}"))
    }
}

pub trait FaceDetector: Send {
    /// Find faces in `frame`; boxes in frame pixels, sorted by score, highest first.
    fn detect(&mut self, frame: &Frame, out: &mut Detections) -> Result<(), DetectError>;
    /// Model identity for logs and status (file name and SHA-256).
    fn describe(&self) -> String;
    /// SHA-256 of the model file that was verified and loaded.
    fn sha256(&self) -> &str;
    /// The face heights (frame pixels) this detector is laid out to find in a `width` x `height` frame, smallest
    /// and largest, from the measured range of its model (see `PYRAMID_MIN_MODEL_FACE`).
    fn face_range(&self, width: u32, height: u32) -> (f32, f32);
    /// Get ready for `width` x `height` frames (a detector that optimizes per input size does it here, at start,
    /// rather than inside the first frame's time budget).
    fn prepare(&mut self, _width: u32, _height: u32) -> Result<(), ModelError> {
        Ok(())
    }
    /// Another detector for another thread: the same verified, parsed and optimized model (shared, not read,
    /// parsed or optimized again), with its own running state and buffers.
    fn fork(&self) -> Result<Box<dyn FaceDetector>, ModelError>;
    /// `[detect.blur_also]`'s second detector, where there is one (its model's hash is reported too).
    fn second(&self) -> Option<&dyn FaceDetector> {
        None
    }
    /// `detect` told where another detector found faces on the same frame (`guides`, frame pixels): a detector
    /// that can spend less by looking there (a guided `Pyramid`) does; the others ignore them.
    fn detect_guided(&mut self, frame: &Frame, _guides: &[Detection], out: &mut Detections) -> Result<(), DetectError> {
        self.detect(frame, out)
    }
}

/// Which BlazeFace: one pass of short range (faces within ~2 m, 128x128 input) or full range (~5 m, 192x192)
/// over the letterboxed frame, or short range over an image pyramid (`Pyramid`: every face size from
/// `detect.min_face` up to the whole frame; the model file is the short-range one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlazeFaceKind {
    ShortRange,
    FullRange,
    Pyramid,
}

impl BlazeFaceKind {
    fn input_size(self) -> u32 {
        match self {
            BlazeFaceKind::ShortRange | BlazeFaceKind::Pyramid => 128,
            BlazeFaceKind::FullRange => 192,
        }
    }
    /// (stride, anchors per cell), from MediaPipe's SsdAnchorsCalculator options for each graph.
    fn anchor_spec(self) -> &'static [(u32, usize)] {
        match self {
            BlazeFaceKind::ShortRange | BlazeFaceKind::Pyramid => &[(8, 2), (16, 6)],
            BlazeFaceKind::FullRange => &[(4, 1)],
        }
    }
    /// How this model's boxes map onto the full-range model's, (scale about the centre, centre shift in box
    /// heights): the classifier's crop box and the blur margin were measured on full-range boxes. The short-range
    /// model's box sits lower on the face: on 2,000 FER+ val faces (`mien eval --ferplus DIR --split val
    /// --measure-crop`) the FER crop is 1.166 times its box and 0.102 box heights above its centre, against
    /// 1.134 and 0.036 for full range: its boxes are grown by 1.166 / 1.134 and moved up by 0.065 heights.
    fn box_convention(self) -> (f32, f32) {
        match self {
            BlazeFaceKind::ShortRange | BlazeFaceKind::Pyramid => (1.166 / 1.134, -0.065),
            BlazeFaceKind::FullRange => (1.0, 0.0),
        }
    }
    /// Face heights, in model input pixels, that one pass finds reliably (see `PYRAMID_MIN_MODEL_FACE`).
    fn model_face_range(self) -> (f32, f32) {
        match self {
            BlazeFaceKind::ShortRange | BlazeFaceKind::Pyramid => (PYRAMID_MIN_MODEL_FACE, PYRAMID_MAX_MODEL_FACE),
            BlazeFaceKind::FullRange => (FULL_RANGE_MIN_MODEL_FACE, 144.0),
        }
    }
}

pub struct BlazeFace {
    kind: BlazeFaceKind,
    model: Runnable,
    sha256: String,
    name: String,
    size: u32,
    anchors: Vec<[f32; 2]>,
    score_threshold: f32,
    nms_iou: f32,
    scaler: Scaler,
    letterbox: Vec<u8>,
    input: Vec<f32>,
    candidates: Vec<Detection>,
}

impl BlazeFace {
    pub fn load(path: &Path, kind: BlazeFaceKind, score_threshold: f32, nms_iou: f32) -> Result<Self, ModelError> {
        let size = kind.input_size() as usize;
        let (model, sha256) = model::load_f32(path, &[1, 3, size, size])?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let me = BlazeFace::with_model(kind, model, sha256, name, score_threshold, nms_iou);
        check_anchor_outputs(path, &me.model, me.size, kind)?;
        Ok(me)
    }

    /// A detector around an optimized `model` (loaded, or shared with another thread's), with its own buffers.
    fn with_model(kind: BlazeFaceKind, model: Runnable, sha256: String, name: String, thr: f32, iou: f32) -> Self {
        let size = kind.input_size();
        BlazeFace {
            kind,
            model,
            sha256,
            name,
            size,
            anchors: anchors(size, size, kind.anchor_spec()),
            score_threshold: thr,
            nms_iou: iou,
            scaler: Scaler::default(),
            letterbox: vec![0; (size * size * 3) as usize],
            input: vec![0.0; (size * size * 3) as usize],
            candidates: Vec::with_capacity(256),
        }
    }
}

/// One dry run of `model` on a `size` x `size` input: both outputs must have a row per anchor of `kind`, so that a
/// wrong file or a wrong `detect.kind` is caught at start rather than on the first frame.
fn check_anchor_outputs(path: &Path, model: &Runnable, size: u32, kind: BlazeFaceKind) -> Result<(), ModelError> {
    let err = |msg: String| ModelError::Tract { path: path.into(), msg };
    let s = size as usize;
    let out = model::run_f32(model, &[1, 3, s, s], &vec![0.0; 3 * s * s]).map_err(|e| err(format!("{e:#}")))?;
    let n = anchors(size, size, kind.anchor_spec()).len();
    let counts: Vec<usize> = out.iter().map(|o| o.shape().get(1).copied().unwrap_or(0)).collect();
    if counts != [n, n] {
        return Err(err(format!("outputs have {counts:?} anchors, {kind:?} expects [{n}, {n}]: is detect.kind right?")));
    }
    Ok(())
}

/// Anchor centres in model input pixels for a `w` x `h` input, in the order of the model's outputs: layer by
/// layer, row-major, `per_cell` anchors per grid cell (MediaPipe's SsdAnchorsCalculator with fixed anchor size).
fn anchors(w: u32, h: u32, spec: &[(u32, usize)]) -> Vec<[f32; 2]> {
    let mut a = Vec::new();
    for &(stride, per_cell) in spec {
        for y in 0..h / stride {
            for x in 0..w / stride {
                for _ in 0..per_cell {
                    a.push([(x as f32 + 0.5) * stride as f32, (y as f32 + 0.5) * stride as f32]);
                }
            }
        }
    }
    a
}

/// One pass's raw outputs (16 regressors and one logit per anchor) to candidates in frame pixels. Box centres
/// and keypoints are offsets from the anchor in model pixels, sizes are model pixels; the input's (0, 0) is model
/// pixel `origin` (a window's corner in its level; 0 for a whole input), and model pixel (x, y) is frame pixel
/// (x / zx, y / zy). `kind`'s boxes are put in the common (full-range) convention.
#[allow(clippy::too_many_arguments)]
fn decode(
    reg: &[f32],
    cls: &[f32],
    anchors: &[[f32; 2]],
    origin: [f32; 2],
    (zx, zy): (f32, f32),
    kind: BlazeFaceKind,
    threshold: f32,
    out: &mut Vec<Detection>,
) -> Result<(), DetectError> {
    let (grow, shift) = kind.box_convention();
    let n = anchors.len();
    if reg.len() < n * 16 || cls.len() < n {
        return Err(DetectError::Inference(format!("output sizes {} / {} for {n} anchors", reg.len(), cls.len())));
    }
    for (i, a) in anchors.iter().enumerate() {
        let score = sigmoid(cls[i]);
        if score < threshold {
            continue;
        }
        let a = [a[0] + origin[0], a[1] + origin[1]];
        let r = &reg[i * 16..i * 16 + 4];
        let (w, h) = (r[2] * grow, r[3] * grow);
        let (cx, cy) = (a[0] + r[0], a[1] + r[1] + shift * r[3]);
        let bbox = BBox { x0: (cx - w / 2.0) / zx, y0: (cy - h / 2.0) / zy, x1: (cx + w / 2.0) / zx, y1: (cy + h / 2.0) / zy };
        // Keypoints 0 and 1 are the eyes, offsets from the anchor like the box centre (MediaPipe's layout). On a
        // small face they are a few model pixels apart and their angle is noise: such faces count as upright.
        let k = &reg[i * 16 + 4..i * 16 + 12];
        let apart = (k[2] - k[0]).hypot(k[3] - k[1]);
        let roll = if apart >= MIN_EYE_DISTANCE { eye_line_roll([k[0], k[1]], [k[2], k[3]]) } else { f32::NAN };
        // Eyes, nose tip and mouth centre, in frame pixels.
        let kp = |j: usize| [(a[0] + k[2 * j]) / zx, (a[1] + k[2 * j + 1]) / zy];
        let keypoints = Some([kp(KP_EYE_A), kp(KP_EYE_B), kp(KP_NOSE), kp(KP_MOUTH)]);
        if bbox.width() > 1.0 && bbox.height() > 1.0 && bbox.x0.is_finite() && bbox.y1.is_finite() {
            out.push(Detection { bbox, score, roll, blur_only: false, keypoints }); // NaN roll: none (NMS skips it)
        }
    }
    Ok(())
}

/// Copy an RGB24 image (`rw` x `rh`) into the top-left of a planar NCHW input (`iw` x `ih`) in [-1, 1]; the rest
/// is black (-1), as in MediaPipe's letterbox.
fn to_input(rgb: &[u8], rw: u32, rh: u32, iw: u32, ih: u32, input: &mut [f32]) {
    let (rw, rh, iw, ih) = (rw as usize, rh as usize, iw as usize, ih as usize);
    let plane = iw * ih;
    input.fill(-1.0);
    for y in 0..rh {
        let src = &rgb[y * rw * 3..(y + 1) * rw * 3];
        for c in 0..3 {
            let dst = &mut input[c * plane + y * iw..c * plane + y * iw + rw];
            for (d, p) in dst.iter_mut().zip(src.chunks_exact(3)) {
                *d = p[c] as f32 / 127.5 - 1.0;
            }
        }
    }
}

/// The scales of the pyramid for a `w` x `h` frame: the first maps `min_face` to `PYRAMID_MIN_MODEL_FACE`, each
/// next one is `PYRAMID_STEP` times smaller, and the last one holds a face as tall as the frame's longer side
/// within `PYRAMID_MAX_MODEL_FACE`.
pub fn pyramid_scales(w: u32, h: u32, min_face: f32) -> Vec<f32> {
    pyramid_scales_up_to(w, h, min_face, f32::INFINITY)
}

/// `pyramid_scales` for faces up to `max_face` px (or the frame's longer side, if smaller) only.
fn pyramid_scales_up_to(w: u32, h: u32, min_face: f32, max_face: f32) -> Vec<f32> {
    let largest = (w.max(h) as f32).min(max_face);
    multi_scale(largest, min_face, (PYRAMID_MIN_MODEL_FACE, PYRAMID_MAX_MODEL_FACE), PYRAMID_STEP, f32::INFINITY)
}

/// The scales at which a detector that trusts one run with faces of `lo`-`hi` model pixels runs a frame to find
/// every face from `min_face` up to `largest` (the frame's longer side, or a smaller `max_face`): the first maps
/// `min_face` to `lo` (at most `max_first`), each next one is `step` times smaller, the last holds a face of
/// `largest` within `hi`.
fn multi_scale(largest: f32, min_face: f32, (lo, hi): (f32, f32), step: f32, max_first: f32) -> Vec<f32> {
    let mut z = (lo / min_face.max(1.0)).min(max_first);
    let mut v = vec![z];
    while hi / z < largest && v.len() < 16 {
        z /= step;
        v.push(z);
    }
    v
}

/// One scale of a fully convolutional detector (a pyramid level, a pass): the frame scaled to `rw` x `rh`, padded
/// to `iw` x `ih` (multiples of the model's coarsest stride), the model optimized for that input, and its anchor
/// centres (none for an anchor-free model).
struct Level {
    rw: u32,
    rh: u32,
    iw: u32,
    ih: u32,
    plan: model::Runnable,
    state: model::State,
    anchors: Vec<[f32; 2]>,
    /// The scaled frame (empty at the frame's own size: the frame itself is read).
    rgb: Vec<u8>,
    input: Vec<f32>,
}

impl Level {
    /// The level at scale `z` of a `w` x `h` frame, padded to multiples of `multiple`, with the anchors of `spec`.
    fn new(parsed: &model::Parsed, (w, h): (u32, u32), z: f32, multiple: u32, spec: &[(u32, usize)]) -> Result<Level, ModelError> {
        let rw = ((w as f32 * z).round() as u32).max(1);
        let rh = ((h as f32 * z).round() as u32).max(1);
        let (iw, ih) = (rw.div_ceil(multiple).max(2) * multiple, rh.div_ceil(multiple).max(2) * multiple);
        let plan = parsed.runnable_for(&[1, 3, ih as usize, iw as usize])?;
        let state = parsed.state_of(&plan)?;
        let rgb = if (rw, rh) == (w, h) { Vec::new() } else { vec![0; (rw * rh * 3) as usize] };
        let (anchors, input) = (anchors(iw, ih, spec), vec![0.0; (iw * ih * 3) as usize]);
        Ok(Level { rw, rh, iw, ih, plan, state, anchors, rgb, input })
    }

    /// The same level for another thread: the optimized plan is shared, the state and buffers are new.
    fn fork(&self, parsed: &model::Parsed) -> Result<Level, ModelError> {
        Ok(Level {
            plan: self.plan.clone(),
            state: parsed.state_of(&self.plan)?,
            anchors: self.anchors.clone(),
            rgb: vec![0; self.rgb.len()],
            input: vec![0.0; self.input.len()],
            ..*self
        })
    }

    /// Fill the model input from `frame` at this level's size (the frame itself, or scaled into the level's
    /// buffer) with the detector's own conversion `convert(rgb, rw, rh, iw, ih, input)`.
    fn fill_input(&mut self, frame: &Frame, scaler: &mut Scaler, convert: fn(&[u8], u32, u32, u32, u32, &mut [f32])) -> Result<(), DetectError> {
        let Level { rw, rh, iw, ih, rgb, input, .. } = self;
        let src: &[u8] = if (*rw, *rh) == (frame.width, frame.height) {
            &frame.data
        } else {
            scaler.crop_resize(frame, frame.full_rect(), rgb, *rw, *rh)?;
            rgb
        };
        convert(src, *rw, *rh, *iw, *ih, input);
        Ok(())
    }

    fn shape(&self) -> [usize; 4] {
        [1, 3, self.ih as usize, self.iw as usize]
    }

    /// Model pixel (x, y) is frame pixel (x / zx, y / zy).
    fn zoom(&self, frame: &Frame) -> (f32, f32) {
        (self.rw as f32 / frame.width as f32, self.rh as f32 / frame.height as f32)
    }
}

/// A multi-scale detector's levels per frame size (a few sizes are kept: a replay may mix them).
#[derive(Default)]
struct LevelCache(Vec<((u32, u32), Vec<Level>)>);

impl LevelCache {
    /// The levels for `w` x `h` frames, made by `make` the first time.
    fn get(&mut self, w: u32, h: u32, make: impl FnOnce() -> Result<Vec<Level>, ModelError>) -> Result<&mut [Level], ModelError> {
        let i = match self.0.iter().position(|(s, _)| *s == (w, h)) {
            Some(i) => i,
            None => {
                let levels = make()?;
                if self.0.len() >= 4 {
                    self.0.remove(0);
                }
                self.0.push(((w, h), levels));
                self.0.len() - 1
            }
        };
        Ok(&mut self.0[i].1)
    }

    fn fork(&self, parsed: &model::Parsed) -> Result<LevelCache, ModelError> {
        let mut out = Vec::with_capacity(self.0.len());
        for (size, levels) in &self.0 {
            out.push((*size, levels.iter().map(|l| l.fork(parsed)).collect::<Result<Vec<_>, _>>()?));
        }
        Ok(LevelCache(out))
    }
}

/// What the multi-scale detectors (`Pyramid`, `MienFace`) hold alike: the parsed model, shared with the forks
/// (other threads, which may need levels for another frame size), its identity, the stage's settings, the levels
/// per frame size and the per-thread buffers.
struct MultiScale {
    parsed: Arc<model::Parsed>,
    sha256: String,
    name: String,
    min_face: f32,
    /// The largest face the levels are laid out for (`f32::INFINITY`: the whole frame).
    max_face: f32,
    score_threshold: f32,
    nms_iou: f32,
    levels: LevelCache,
    scaler: Scaler,
    candidates: Vec<Detection>,
}

impl MultiScale {
    fn open(path: &Path, min_face: u32, score_threshold: f32, nms_iou: f32) -> Result<Self, ModelError> {
        let parsed = Arc::new(model::Parsed::open(path)?);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(MultiScale::with(parsed, name, min_face as f32, score_threshold, nms_iou, LevelCache::default()))
    }

    fn with(parsed: Arc<model::Parsed>, name: String, min_face: f32, score_threshold: f32, nms_iou: f32, levels: LevelCache) -> Self {
        MultiScale {
            sha256: parsed.sha256.clone(),
            parsed,
            name,
            min_face,
            max_face: f32::INFINITY,
            score_threshold,
            nms_iou,
            levels,
            scaler: Scaler::default(),
            candidates: Vec::with_capacity(1024),
        }
    }

    /// Another thread's: the parsed model and the levels' optimized plans are shared, states and buffers are new.
    fn fork(&self) -> Result<MultiScale, ModelError> {
        let levels = self.levels.fork(&self.parsed)?;
        let me = MultiScale::with(self.parsed.clone(), self.name.clone(), self.min_face, self.score_threshold, self.nms_iou, levels);
        Ok(MultiScale { max_face: self.max_face, ..me })
    }
}

/// Short-range BlazeFace over an image pyramid. The model is fully convolutional: each level runs it once over
/// the whole scaled frame (no tiles, no overlap to pay for), and its anchor grid follows the input size. Faces
/// from `min_face` pixels up to the whole frame land in some level's 26-150 model-pixel range.
///
/// Guided (`Pyramid::guided`, `[detect.blur_also] guide`), the finest level, most of the pyramid's time, runs only
/// in windows around another detector's boxes on the same frame (`detect_guided`): see `Windows`.
pub struct Pyramid {
    core: MultiScale,
    /// The guided finest level's windows (none until guided and prepared).
    windows: Windows,
    guided: bool,
    /// Windows the last frame's finest level ran in (`None`: it ran whole).
    windows_run: Option<usize>,
    /// This frame's windows (`plan_windows`), kept to allocate once.
    plan: Vec<(usize, u32, u32)>,
}

/// Window sides (model pixels, multiples of the coarsest stride) the guided finest level runs in: the smallest
/// that holds the guide box `WINDOW_FIT` times over.
const WINDOW_SIDES: [u32; 3] = [128, 192, 256];
/// A window is at least this many times the guide box's height (in the level's pixels): the face, the head
/// around it and a guide box a little off the face.
const WINDOW_FIT: f32 = 1.6;
/// The guided finest level runs whole when its windows together would take more than this share of its area (a
/// crowd, many false guide boxes): a window costs what its area does (0.13-0.16 us a model pixel in tract, as the
/// whole level; docs/performance.md), so a guided level is never much slower than a whole one.
const WINDOW_MAX_SHARE: f32 = 0.8;
/// The guide boxes that get a window: from this share of `detect.min_face` (smaller faces the finest level does
/// not find either) up to this many times the second level's floor (larger faces are the second level's).
const GUIDE_BELOW_FLOOR: f32 = 0.75;
const GUIDE_OVER_NEXT: f32 = 1.25;

/// The guided finest level's plans, one per side in `WINDOW_SIDES` (the model optimized for that input, shared
/// with the forks), with this thread's state and input buffer each.
#[derive(Default)]
struct Windows(Vec<Window>);

struct Window {
    side: u32,
    plan: model::Runnable,
    state: model::State,
    anchors: Vec<[f32; 2]>,
    input: Vec<f32>,
}

impl Windows {
    fn make(parsed: &model::Parsed) -> Result<Windows, ModelError> {
        let spec = BlazeFaceKind::Pyramid.anchor_spec();
        let mut v = Vec::new();
        for side in WINDOW_SIDES {
            let plan = parsed.runnable_for(&[1, 3, side as usize, side as usize])?;
            let state = parsed.state_of(&plan)?;
            v.push(Window { side, plan, state, anchors: anchors(side, side, spec), input: vec![0.0; (3 * side * side) as usize] });
        }
        Ok(Windows(v))
    }

    fn fork(&self, parsed: &model::Parsed) -> Result<Windows, ModelError> {
        let mut v = Vec::new();
        for w in &self.0 {
            let (plan, anchors, input) = (w.plan.clone(), w.anchors.clone(), vec![0.0; w.input.len()]);
            v.push(Window { side: w.side, state: parsed.state_of(&plan)?, plan, anchors, input });
        }
        Ok(Windows(v))
    }
}

/// Where the guided finest level runs, for a level of `iw` x `ih` model pixels at scale `z` whose own faces
/// (those no coarser level finds) are `lo`-`hi` px tall: a window (index into `WINDOW_SIDES`, corner in model
/// pixels on the coarsest stride's grid, so that its anchors are the whole level's) centred on each guide box in
/// that range, or `None` when the level must run whole (a box too large for a window, or the windows together
/// over `WINDOW_MAX_SHARE` of the level). Identical windows run once.
fn plan_windows(guides: &[Detection], z: f32, (iw, ih): (u32, u32), (lo, hi): (f32, f32), out: &mut Vec<(usize, u32, u32)>) -> Option<()> {
    out.clear();
    let mut area = 0u64;
    for g in guides {
        let hgt = g.bbox.height();
        if !(lo..=hi).contains(&hgt) {
            continue;
        }
        let b = BBox { x0: g.bbox.x0 * z, y0: g.bbox.y0 * z, x1: g.bbox.x1 * z, y1: g.bbox.y1 * z };
        // A box (a part of a face, a second box on it) wholly inside a window planned already is seen there.
        let inside = |&(k, ox, oy): &(usize, u32, u32)| {
            let (x, y, s) = (ox as f32, oy as f32, WINDOW_SIDES[k] as f32);
            b.x0 >= x && b.y0 >= y && b.x1 <= x + s && b.y1 <= y + s
        };
        if out.iter().any(inside) {
            continue;
        }
        let k = WINDOW_SIDES.iter().position(|&s| s as f32 >= WINDOW_FIT * hgt * z)?;
        let side = WINDOW_SIDES[k];
        if side > iw || side > ih {
            return None;
        }
        let corner = |c: f32, limit: u32| ((((c * z - side as f32 / 2.0) / 16.0).round().max(0.0) as u32) * 16).min(limit - side);
        let (cx, cy) = ((g.bbox.x0 + g.bbox.x1) / 2.0, (g.bbox.y0 + g.bbox.y1) / 2.0);
        let w = (k, corner(cx, iw), corner(cy, ih));
        if !out.contains(&w) {
            area += (side * side) as u64;
            out.push(w);
        }
    }
    (area as f32 <= WINDOW_MAX_SHARE * (iw * ih) as f32).then_some(())
}

impl Pyramid {
    pub fn load(path: &Path, min_face: u32, score_threshold: f32, nms_iou: f32) -> Result<Self, ModelError> {
        let core = MultiScale::open(path, min_face, score_threshold, nms_iou)?;
        // One dry run at the model's own size checks that it is the short-range model (its anchors).
        check_anchor_outputs(path, &core.parsed.runnable_for(&[1, 3, 128, 128])?, 128, BlazeFaceKind::Pyramid)?;
        Ok(Pyramid { core, windows: Windows::default(), guided: false, windows_run: None, plan: Vec::new() })
    }

    fn forked(&self) -> Result<Pyramid, ModelError> {
        let (core, windows) = (self.core.fork()?, self.windows.fork(&self.core.parsed)?);
        Ok(Pyramid { core, windows, guided: self.guided, windows_run: None, plan: Vec::new() })
    }

    /// Run the finest level only around the boxes `detect_guided` is given (`[detect.blur_also] guide`).
    pub fn guided(self) -> Self {
        Pyramid { guided: true, ..self }
    }

    /// Run the levels over `frame`; with `guides`, the finest level only in windows around them where
    /// `plan_windows` allows it.
    fn run(&mut self, frame: &Frame, guides: Option<&[Detection]>, out: &mut Detections) -> Result<(), DetectError> {
        let MultiScale { parsed, levels, scaler, candidates, score_threshold, min_face, max_face, nms_iou, .. } = &mut self.core;
        let (w, h) = (frame.width, frame.height);
        let levels = levels.get(w, h, || pyramid_levels(parsed, w, h, *min_face, *max_face)).map_err(DetectError::inference)?;
        let plan = &mut self.plan;
        let windowed = match guides {
            Some(g) if levels.len() >= 2 => {
                if self.windows.0.is_empty() {
                    self.windows = Windows::make(parsed).map_err(DetectError::inference)?;
                }
                let (z0, z1) = (levels[0].zoom(frame).0, levels[1].zoom(frame).0);
                let range = (GUIDE_BELOW_FLOOR * *min_face, GUIDE_OVER_NEXT * PYRAMID_MIN_MODEL_FACE / z1);
                plan_windows(g, z0, (levels[0].iw, levels[0].ih), range, plan).is_some()
            }
            _ => false,
        };
        self.windows_run = windowed.then_some(plan.len());
        candidates.clear();
        for (i, lv) in levels.iter_mut().enumerate() {
            if i == 0 && windowed && plan.is_empty() {
                continue; // no window: the level is not even scaled
            }
            lv.fill_input(frame, scaler, to_input)?;
            let zoom = lv.zoom(frame);
            if i == 0 && windowed {
                let plane = (lv.iw * lv.ih) as usize;
                for &(k, ox, oy) in plan.iter() {
                    let win = &mut self.windows.0[k];
                    let (s, iw) = (win.side as usize, lv.iw as usize);
                    for c in 0..3 {
                        for y in 0..s {
                            let src = c * plane + (oy as usize + y) * iw + ox as usize;
                            win.input[(c * s + y) * s..(c * s + y + 1) * s].copy_from_slice(&lv.input[src..src + s]);
                        }
                    }
                    let input = (&[1, 3, s, s][..], &win.input[..], &win.anchors[..], [ox as f32, oy as f32]);
                    run_level(&mut win.state, input, zoom, *score_threshold, candidates)?;
                }
                continue;
            }
            let shape = lv.shape();
            run_level(&mut lv.state, (&shape[..], &lv.input[..], &lv.anchors[..], [0.0; 2]), zoom, *score_threshold, candidates)?;
        }
        weighted_nms(candidates, *nms_iou, out)
    }

    /// Lay the levels out for faces up to `max_face` px only (`f32::INFINITY`: the whole frame).
    pub fn up_to(mut self, max_face: f32) -> Self {
        self.core.max_face = max_face;
        self
    }
}

/// Run a pyramid level or a window of one through `state` and add its candidates: `(shape, input, anchors, origin)`
/// as `decode` takes them.
fn run_level(
    state: &mut model::State,
    (shape, input, anchors, origin): (&[usize], &[f32], &[[f32; 2]], [f32; 2]),
    zoom: (f32, f32),
    threshold: f32,
    candidates: &mut Vec<Detection>,
) -> Result<(), DetectError> {
    let outputs = model::run_state(state, shape, input).map_err(DetectError::inference)?;
    let reg = model::output_f32(&outputs[0]).map_err(DetectError::inference)?;
    let cls = model::output_f32(&outputs[1]).map_err(DetectError::inference)?;
    decode(reg, cls, anchors, origin, zoom, BlazeFaceKind::Pyramid, threshold, candidates)
}

/// The pyramid's levels for `w` x `h` frames.
fn pyramid_levels(parsed: &model::Parsed, w: u32, h: u32, min_face: f32, max_face: f32) -> Result<Vec<Level>, ModelError> {
    let spec = BlazeFaceKind::Pyramid.anchor_spec();
    let levels =
        pyramid_scales_up_to(w, h, min_face, max_face).into_iter().map(|z| Level::new(parsed, (w, h), z, 16, spec)).collect::<Result<Vec<_>, _>>()?;
    log::info!(
        "detect: pyramid for {w}x{h}, faces from {min_face} px: levels {}",
        levels.iter().map(|l| format!("{}x{}", l.iw, l.ih)).collect::<Vec<_>>().join(", ")
    );
    Ok(levels)
}

impl FaceDetector for Pyramid {
    fn fork(&self) -> Result<Box<dyn FaceDetector>, ModelError> {
        Ok(Box::new(self.forked()?))
    }

    fn prepare(&mut self, w: u32, h: u32) -> Result<(), ModelError> {
        let c = &mut self.core;
        let (parsed, min_face, max_face) = (&c.parsed, c.min_face, c.max_face);
        c.levels.get(w, h, || pyramid_levels(parsed, w, h, min_face, max_face))?;
        if self.guided && self.windows.0.is_empty() {
            self.windows = Windows::make(&c.parsed)?;
        }
        Ok(())
    }

    fn detect(&mut self, frame: &Frame, out: &mut Detections) -> Result<(), DetectError> {
        self.run(frame, None, out)
    }

    fn detect_guided(&mut self, frame: &Frame, guides: &[Detection], out: &mut Detections) -> Result<(), DetectError> {
        let guides = if self.guided { Some(guides) } else { None };
        self.run(frame, guides, out)
    }

    fn sha256(&self) -> &str {
        &self.core.sha256
    }

    fn describe(&self) -> String {
        let c = &self.core;
        let guided = if self.guided { ", finest level guided" } else { "" };
        format!("BlazeFace pyramid (short range, faces from {} px{guided}) {} sha256:{}", c.min_face, c.name, &c.sha256[..12])
    }

    fn face_range(&self, width: u32, height: u32) -> (f32, f32) {
        let z = pyramid_scales_up_to(width, height, self.core.min_face, self.core.max_face);
        (PYRAMID_MIN_MODEL_FACE / z[0], (PYRAMID_MAX_MODEL_FACE / z[z.len() - 1]).min(self.core.max_face))
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-80.0, 80.0)).exp())
}

/// See `weighted_nms`: the share of a smaller candidate's area inside a higher-scored box that makes it part of
/// that face.
pub const CONTAINED: f32 = 0.8;

/// Weighted non-maximum suppression (as MediaPipe does): overlapping candidates are merged into one box,
/// their coordinates averaged by score, which keeps boxes steady from frame to frame. A smaller candidate that
/// lies mostly (`CONTAINED`) inside a higher-scored box is a part of that face (an eye, a mouth) seen by a finer
/// head: it is dropped, not averaged in, since averaging would shrink the face's box, and the face's blur covers
/// it. More merged faces than `MAX_FACES` is an error that counts them all: the caller must not pass the frame
/// on with some left out.
pub fn weighted_nms(cands: &mut Vec<Detection>, iou: f32, out: &mut Detections) -> Result<(), DetectError> {
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.clear();
    let mut found = 0; // merged faces beyond MAX_FACES
    while !cands.is_empty() {
        let top = cands[0];
        let (mut acc, mut wsum, mut roll_w) = ([0f32; 5], 0f32, 0f32);
        let (mut kp_acc, mut kp_w) = ([[0f32; 2]; 4], 0f32);
        cands.retain(|c| {
            let overlap = c.bbox.iou(&top.bbox);
            if overlap <= iou && c.bbox.area() < top.bbox.area() && c.bbox.inside_share(&top.bbox) >= CONTAINED {
                false
            } else if overlap > iou {
                acc[0] += c.bbox.x0 * c.score;
                acc[1] += c.bbox.y0 * c.score;
                acc[2] += c.bbox.x1 * c.score;
                acc[3] += c.bbox.y1 * c.score;
                // Overlapping candidates see the same face, so their rolls are close: a plain weighted mean of
                // those that have one (a NaN roll is a candidate whose eyes were too close to tell).
                if c.roll.is_finite() {
                    acc[4] += c.roll * c.score;
                    roll_w += c.score;
                }
                // Keypoints are averaged like the box.
                if let Some(k) = &c.keypoints {
                    for (a, p) in kp_acc.iter_mut().zip(k) {
                        a[0] += p[0] * c.score;
                        a[1] += p[1] * c.score;
                    }
                    kp_w += c.score;
                }
                wsum += c.score;
                false
            } else {
                true
            }
        });
        let merged = if wsum > 0.0 {
            BBox { x0: acc[0] / wsum, y0: acc[1] / wsum, x1: acc[2] / wsum, y1: acc[3] / wsum }
        } else {
            top.bbox
        };
        let roll = if roll_w > 0.0 { acc[4] / roll_w } else if top.roll.is_finite() { top.roll } else { 0.0 };
        let keypoints = if kp_w > 0.0 { Some(kp_acc.map(|[x, y]| [x / kp_w, y / kp_w])) } else { top.keypoints };
        if out.is_full() {
            found += 1;
        } else {
            let _ = out.push(Detection { bbox: merged, score: top.score, roll, blur_only: false, keypoints });
        }
    }
    if found > 0 {
        return Err(DetectError::TooManyFaces { found: found + MAX_FACES, max: MAX_FACES });
    }
    Ok(())
}

impl FaceDetector for BlazeFace {
    fn fork(&self) -> Result<Box<dyn FaceDetector>, ModelError> {
        let (model, sha256, name) = (self.model.clone(), self.sha256.clone(), self.name.clone());
        Ok(Box::new(BlazeFace::with_model(self.kind, model, sha256, name, self.score_threshold, self.nms_iou)))
    }

    fn detect(&mut self, frame: &Frame, out: &mut Detections) -> Result<(), DetectError> {
        // Letterbox: scale the longer side to the model size, pad bottom/right with black.
        let s = self.size;
        let scale = s as f32 / frame.width.max(frame.height) as f32;
        let (rw, rh) = (
            ((frame.width as f32 * scale).round() as u32).clamp(1, s),
            ((frame.height as f32 * scale).round() as u32).clamp(1, s),
        );
        let mut resized = std::mem::take(&mut self.letterbox);
        let res = self.scaler.crop_resize(frame, frame.full_rect(), &mut resized[..(rw * rh * 3) as usize], rw, rh);
        self.letterbox = resized;
        res?;
        to_input(&self.letterbox, rw, rh, s, s, &mut self.input);
        let su = s as usize;
        let outputs = model::run_f32(&self.model, &[1, 3, su, su], &self.input).map_err(DetectError::inference)?;
        let reg = model::output_f32(&outputs[0]).map_err(DetectError::inference)?;
        let cls = model::output_f32(&outputs[1]).map_err(DetectError::inference)?;
        self.candidates.clear();
        decode(reg, cls, &self.anchors, [0.0; 2], (scale, scale), self.kind, self.score_threshold, &mut self.candidates)?;
        weighted_nms(&mut self.candidates, self.nms_iou, out)
    }

    fn sha256(&self) -> &str {
        &self.sha256
    }

    fn describe(&self) -> String {
        format!("BlazeFace {:?} {} sha256:{}", self.kind, self.name, &self.sha256[..12])
    }

    fn face_range(&self, width: u32, height: u32) -> (f32, f32) {
        let (lo, hi) = self.kind.model_face_range();
        let back = width.max(height) as f32 / self.size as f32;
        (lo * back, (hi * back).min(height as f32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fork_shares_the_optimized_model_and_finds_the_same_faces() {
        let img = image::open("samples/clip/frame_0000.jpg").unwrap().to_rgb8();
        let mut frame = Frame::new(img.width(), img.height());
        frame.data.copy_from_slice(img.as_raw());
        let mut a = Pyramid::load(Path::new("models/blazeface_short_range.onnx"), 40, 0.4, 0.3).unwrap();
        a.prepare(frame.width, frame.height).unwrap();
        let mut b = a.forked().unwrap();
        assert!(Arc::ptr_eq(&a.core.parsed, &b.core.parsed));
        let (la, lb) = (&a.core.levels.0[0].1, &b.core.levels.0[0].1);
        assert!(la.len() >= 2 && la.len() == lb.len());
        for (x, y) in la.iter().zip(lb) {
            assert!(Arc::ptr_eq(&x.plan, &y.plan), "a level's plan was optimized again");
            assert_ne!(x.input.as_ptr(), y.input.as_ptr());
        }
        let (mut da, mut db) = (Detections::new(), Detections::new());
        a.detect(&frame, &mut da).unwrap();
        b.detect(&frame, &mut db).unwrap();
        assert!(!da.is_empty(), "the clip's first frame has a face");
        let boxes = |d: &Detections| d.iter().map(|x| (x.bbox, x.score, x.keypoints)).collect::<Vec<_>>();
        assert_eq!(boxes(&da), boxes(&db));
        // Its keypoints come in frame pixels: inside the box, the eyes above the nose, the nose above the mouth.
        let (f, k) = (&da[0], da[0].keypoints.expect("BlazeFace gives keypoints"));
        let inside = |p: [f32; 2]| p[0] > f.bbox.x0 && p[0] < f.bbox.x1 && p[1] > f.bbox.y0 && p[1] < f.bbox.y1;
        assert!(k.iter().all(|&p| inside(p)), "keypoints {k:?} outside the box {:?}", f.bbox);
        assert!(k[KP_EYE_A][1].max(k[KP_EYE_B][1]) < k[KP_NOSE][1] && k[KP_NOSE][1] < k[KP_MOUTH][1], "{k:?}");
        assert!(k[KP_EYE_A][0] < k[KP_EYE_B][0], "MediaPipe's first eye is on the image's left: {k:?}");
    }

    #[test]
    fn both_networks_find_the_clips_face_on_this_target() {
        // The board profiles run the pyramid and mien-face (`[detect.blur_also]`) from their floor: .ci/run runs
        // this under qemu-aarch64 and qemu-arm too, so both networks load and find a face with each target's kernels.
        let img = image::open("samples/clip/frame_0000.jpg").unwrap().to_rgb8();
        let mut frame = Frame::new(img.width(), img.height());
        frame.data.copy_from_slice(img.as_raw());
        let model = "models/mien_face.onnx".into();
        let second =
            BlurAlsoConfig { kind: DetectorKind::MienFace, model, score_threshold: 0.3, min_face: None, max_face: None, guide: false };
        let cfg = DetectConfig { min_face: 40, blur_also: Some(second), cover_margin: 0.4, ..DetectConfig::default() };
        let mut both = load(&cfg).unwrap();
        both.prepare(frame.width, frame.height).unwrap();
        let mut out = Detections::new();
        both.detect(&frame, &mut out).unwrap();
        let face = out.iter().find(|d| !d.blur_only).unwrap_or_else(|| panic!("no labelled face: {out:?}")).bbox;
        let mut alone = MienFace::load(Path::new("models/mien_face.onnx"), 40, 0.3, 0.3).unwrap();
        alone.prepare(frame.width, frame.height).unwrap();
        alone.detect(&frame, &mut out).unwrap();
        assert!(out.iter().any(|d| d.bbox.iou(&face) > 0.4), "mien-face misses the face at {face:?}: {out:?}");
    }

    #[test]
    // The windows' arithmetic is the same on every target: not run again under qemu (seconds a frame there).
    #[cfg_attr(not(target_arch = "x86_64"), ignore)]
    fn a_guided_pyramid_finds_what_the_whole_finest_level_finds() {
        // The clip's frames of one face and of two, the default's pair (the pyramid from 32 px guided by every box
        // mien-face from 16 px draws at 0.25, false ones too): the labelled faces, their scores and keypoints come
        // out as from the whole level. (mien-face from 40 px, a pass at 0.4 of the frame, misses frame 14's 42 px
        // face: the board profiles are not guided.)
        let mut whole = Pyramid::load(Path::new("models/blazeface_short_range.onnx"), 32, 0.4, 0.3).unwrap();
        let mut guided = whole.forked().unwrap().guided();
        let mut guide = MienFace::load(Path::new("models/mien_face.onnx"), 16, 0.25, 0.3).unwrap();
        for name in ["frame_0010", "frame_0014"] {
            let img = image::open(format!("samples/clip/{name}.jpg")).unwrap().to_rgb8();
            let mut frame = Frame::new(img.width(), img.height());
            frame.data.copy_from_slice(img.as_raw());
            let (mut a, mut b, mut g) = (Detections::new(), Detections::new(), Detections::new());
            whole.detect(&frame, &mut a).unwrap();
            guide.detect(&frame, &mut g).unwrap();
            guided.detect_guided(&frame, &g, &mut b).unwrap();
            assert!(guided.windows_run.is_some_and(|n| n > 0), "{name}: the finest level ran whole ({} guides)", g.len());
            let labelled = |d: &Detections| d.iter().filter(|x| x.score >= 0.75).copied().collect::<Vec<_>>();
            let (la, lb) = (labelled(&a), labelled(&b));
            assert!(!la.is_empty() && la.len() == lb.len(), "{name}: {la:?} against {lb:?}");
            for (x, y) in la.iter().zip(&lb) {
                assert!(x.bbox.iou(&y.bbox) > 0.9 && (x.score - y.score).abs() < 0.05, "{name}: {x:?} against {y:?}");
                let (kx, ky) = (x.keypoints.unwrap(), y.keypoints.unwrap());
                // Within 5% of the face's height (the candidates merged differ at the window's edges).
                let near = |(p, q): (&[f32; 2], &[f32; 2])| (p[0] - q[0]).hypot(p[1] - q[1]) < 0.05 * x.bbox.height();
                assert!(kx.iter().zip(&ky).all(near), "{name}: {kx:?} against {ky:?}");
            }
            // No guide, no window: the finest level finds nothing (its faces are left to the guiding detector's
            // blur); unguided, it runs whole.
            guided.detect_guided(&frame, &[], &mut b).unwrap();
            assert_eq!(guided.windows_run, Some(0));
            guided.detect(&frame, &mut b).unwrap();
            assert_eq!((guided.windows_run, b.len()), (None, a.len()));
        }
    }

    #[test]
    fn roll_is_the_eye_line_angle_in_either_order() {
        let deg = |r: f32| (r.to_degrees() * 10.0).round() / 10.0;
        assert_eq!(deg(eye_line_roll([10.0, 10.0], [30.0, 10.0])), 0.0);
        assert_eq!(deg(eye_line_roll([30.0, 10.0], [10.0, 10.0])), 0.0, "keypoint order does not matter");
        // y points down: the right eye lower than the left means a clockwise lean, positive.
        assert_eq!(deg(eye_line_roll([10.0, 10.0], [30.0, 30.0])), 45.0);
        assert_eq!(deg(eye_line_roll([30.0, 30.0], [10.0, 10.0])), 45.0);
        assert_eq!(deg(eye_line_roll([10.0, 30.0], [30.0, 10.0])), -45.0);
    }

    #[test]
    fn weighted_nms_averages_the_roll_of_merged_candidates() {
        let bbox = BBox { x0: 0.0, y0: 0.0, x1: 10.0, y1: 10.0 };
        let d = |score: f32, roll: f32| Detection { bbox, score, roll, blur_only: false, keypoints: None };
        let mut c = vec![d(0.6, 0.2), d(0.2, 0.6), d(0.9, f32::NAN)];
        let mut out = Detections::new();
        weighted_nms(&mut c, 0.3, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!((out[0].roll - 0.3).abs() < 1e-6, "candidates without a roll do not count: {}", out[0].roll);
        // No candidate with a roll: the face counts as upright.
        let mut c = vec![d(0.9, f32::NAN), d(0.5, f32::NAN)];
        weighted_nms(&mut c, 0.3, &mut out).unwrap();
        assert_eq!(out[0].roll, 0.0);
        // Keypoints are averaged by score like the box, over the candidates that have them.
        let k = |x: f32| Some([[x, 1.0], [x + 4.0, 1.0], [x + 2.0, 5.0], [x + 2.0, 8.0]]);
        let mut c = vec![Detection { keypoints: k(1.0), ..d(0.6, 0.0) }, Detection { keypoints: k(4.0), ..d(0.2, 0.0) }, d(0.9, 0.0)];
        weighted_nms(&mut c, 0.3, &mut out).unwrap();
        let got = out[0].keypoints.unwrap();
        assert!((got[0][0] - 1.75).abs() < 1e-5 && (got[3][0] - 3.75).abs() < 1e-5, "{got:?}");
    }

    #[test]
    fn pyramid_levels_cover_min_face_to_the_whole_frame_without_gaps() {
        for (w, h, min_face) in [(640, 480, 16.0), (1920, 1080, 16.0), (640, 480, 40.0), (160, 160, 16.0), (320, 240, 200.0)] {
            let z = pyramid_scales(w, h, min_face);
            // The smallest face the stage promises lands on the first level's smallest trusted size.
            assert!((PYRAMID_MIN_MODEL_FACE / z[0] - min_face).abs() < 1e-3, "{w}x{h}: {z:?}");
            // Every next level starts below where the one before stops trusting itself.
            for k in 1..z.len() {
                assert!(PYRAMID_MIN_MODEL_FACE / z[k] < PYRAMID_MAX_MODEL_FACE / z[k - 1], "{w}x{h}: gap after level {k}");
            }
            // The last level holds a face as tall as the frame's longer side.
            assert!(PYRAMID_MAX_MODEL_FACE / z[z.len() - 1] >= w.max(h) as f32, "{w}x{h}: {z:?}");
        }
        assert_eq!(pyramid_scales(640, 480, 16.0), vec![1.625, 0.40625, 0.1015625]);
    }

    #[test]
    fn anchor_counts_match_mediapipe() {
        assert_eq!(anchors(128, 128, BlazeFaceKind::ShortRange.anchor_spec()).len(), 896);
        assert_eq!(anchors(192, 192, BlazeFaceKind::FullRange.anchor_spec()).len(), 2304);
        // The short-range model is fully convolutional: any input of multiples of 16 has its grid of anchors.
        let a = anchors(640, 480, BlazeFaceKind::Pyramid.anchor_spec());
        assert_eq!(a.len(), 80 * 60 * 2 + 40 * 30 * 6);
        assert_eq!((a[0], a[80 * 60 * 2]), ([4.0, 4.0], [8.0, 8.0]));
    }

    #[test]
    fn more_faces_than_the_stage_keeps_is_an_error_that_counts_them_all() {
        // A crowd of separate faces: up to MAX_FACES they are all reported, one more fails the frame.
        let grid = |n: usize| -> Vec<Detection> {
            (0..n)
                .map(|i| {
                    let (x, y) = ((i % 16) as f32 * 20.0, (i / 16) as f32 * 20.0);
                    Detection::new(BBox { x0: x, y0: y, x1: x + 10.0, y1: y + 10.0 }, 0.5 + (i % 7) as f32 * 0.05)
                })
                .collect()
        };
        let mut out = Detections::new();
        weighted_nms(&mut grid(MAX_FACES), 0.3, &mut out).unwrap();
        assert_eq!(out.len(), MAX_FACES);
        match weighted_nms(&mut grid(MAX_FACES + 9), 0.3, &mut out) {
            Err(DetectError::TooManyFaces { found, max }) => assert_eq!((found, max), (MAX_FACES + 9, MAX_FACES)),
            other => panic!("{} faces must fail the frame, got {other:?}", MAX_FACES + 9),
        }
    }

    #[test]
    fn weighted_nms_drops_a_part_inside_a_face_without_shrinking_it() {
        let face = Detection::new(BBox { x0: 0.0, y0: 0.0, x1: 40.0, y1: 40.0 }, 0.9);
        let eye = Detection::new(BBox { x0: 5.0, y0: 8.0, x1: 17.0, y1: 20.0 }, 0.5);
        // A small face next to the big one, only partly inside its box: kept.
        let beside = Detection::new(BBox { x0: 34.0, y0: 10.0, x1: 46.0, y1: 22.0 }, 0.6);
        let mut out = Detections::new();
        weighted_nms(&mut vec![eye, face, beside], 0.3, &mut out).unwrap();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].bbox, face.bbox, "the part must not be averaged into the face's box");
        assert_eq!(out[1].bbox, beside.bbox);
        // A higher-scored part does not swallow the face around it (only smaller boxes are dropped).
        let eye_high = Detection { score: 0.95, ..eye };
        weighted_nms(&mut vec![eye_high, face], 0.3, &mut out).unwrap();
        assert_eq!(out.len(), 2, "{out:?}");
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_separate_faces() {
        let b = |x: f32, s: f32| Detection::new(BBox { x0: x, y0: 0.0, x1: x + 10.0, y1: 10.0 }, s);
        let mut c = vec![b(0.0, 0.9), b(1.0, 0.6), b(50.0, 0.7)];
        let mut out = Detections::new();
        weighted_nms(&mut c, 0.3, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        assert!(out[0].bbox.x0 > 0.0 && out[0].bbox.x0 < 1.0);
        assert_eq!(out[1].bbox.x0, 50.0);
    }

    /// A detector that reports fixed boxes, or fails.
    #[derive(Clone)]
    struct Fixed(Result<Vec<Detection>, ()>);

    impl FaceDetector for Fixed {
        fn detect(&mut self, _: &Frame, out: &mut Detections) -> Result<(), DetectError> {
            out.clear();
            let boxes = self.0.clone().map_err(|()| DetectError::Inference("fixed failure".into()))?;
            for d in boxes {
                out.push(d).map_err(|_| DetectError::TooManyFaces { found: MAX_FACES + 1, max: MAX_FACES })?;
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "fixed".into()
        }
        fn sha256(&self) -> &str {
            "0"
        }
        fn face_range(&self, _: u32, _: u32) -> (f32, f32) {
            (40.0, 400.0)
        }
        fn fork(&self) -> Result<Box<dyn FaceDetector>, ModelError> {
            Ok(Box::new(Fixed(self.0.clone())))
        }
    }

    fn at(x: f32, w: f32, score: f32) -> Detection {
        Detection::new(BBox { x0: x, y0: 10.0, x1: x + w, y1: 10.0 + w }, score)
    }

    #[test]
    fn blur_also_adds_the_second_detectors_new_faces_as_blur_only() {
        let frame = Frame::new(640, 480);
        let first = Fixed(Ok(vec![at(100.0, 40.0, 0.9)]));
        // The same face (a slightly larger box, and a part inside it), both inside the first box's blur (grown by
        // the privacy margin, 0.4: x 84-156, y -6-66); a small face the first one missed; and a box as wide as the
        // first, twice as tall, half inside it (the first found only the top of that face): its lower part, y
        // 66-90, lies past the first's blur, so it is blurred itself.
        let tall = Detection::new(BBox { x0: 100.0, y0: 10.0, x1: 140.0, y1: 90.0 }, 0.5);
        let second = Fixed(Ok(vec![at(98.0, 44.0, 0.6), at(110.0, 12.0, 0.5), at(300.0, 16.0, 0.4), tall]));
        let mut both = BlurAlso::new(Box::new(first.clone()), Box::new(second.clone()), 0.4);
        let mut out = Detections::new();
        both.detect(&frame, &mut out).unwrap();
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!((out[0].bbox.x0, out[0].blur_only), (100.0, false), "the first detector's face, labelled");
        assert_eq!((out[1].bbox.x0, out[1].blur_only), (300.0, true), "the new face, blurred only");
        assert_eq!((out[2].bbox.y1, out[2].blur_only), (90.0, true), "the face past the first's blur, blurred only");
        // With no margin (privacy.margin = 0) only the part wholly inside the first box is left out.
        let mut strict = BlurAlso::new(Box::new(first), Box::new(second), 0.0);
        strict.detect(&frame, &mut out).unwrap();
        assert_eq!(out.iter().map(|d| d.bbox.x0).collect::<Vec<_>>(), [100.0, 98.0, 300.0, 100.0], "{out:?}");
        // Forks keep both; the range is the union; the second's hash is reachable for the status.
        let mut f = both.fork().unwrap();
        f.detect(&frame, &mut out).unwrap();
        assert_eq!(out.len(), 3, "the fork keeps the margin");
        assert!(both.second().is_some());
        assert_eq!(both.face_range(640, 480), (40.0, 400.0));
    }

    #[test]
    fn blur_also_up_to_leaves_out_second_boxes_taller_than_max_face() {
        let frame = Frame::new(640, 480);
        let first = Fixed(Ok(vec![at(100.0, 40.0, 0.9)]));
        // A small face the first missed (16 px), one at the limit (128 px) and a box past it (129 px, a cup).
        let second = Fixed(Ok(vec![at(300.0, 16.0, 0.4), at(400.0, 128.0, 0.3), at(0.0, 129.0, 0.3)]));
        let mut both = BlurAlso::new(Box::new(first), Box::new(second), 0.4).up_to(128.0);
        let mut out = Detections::new();
        both.detect(&frame, &mut out).unwrap();
        assert_eq!(out.iter().map(|d| (d.bbox.x0, d.blur_only)).collect::<Vec<_>>(), [(100.0, false), (300.0, true), (400.0, true)]);
        // Forks keep the limit; the range's top is the first's (400) over the second's capped one.
        let mut f = both.fork().unwrap();
        f.detect(&frame, &mut out).unwrap();
        assert_eq!(out.len(), 3, "the fork keeps max_face");
        assert_eq!(both.face_range(640, 480), (40.0, 400.0));
        // Boxes too tall do not count toward MAX_FACES either.
        let tall = (0..MAX_FACES).map(|i| at(i as f32, 200.0, 0.3)).collect();
        let mut both = BlurAlso::new(Box::new(Fixed(Ok(vec![at(0.0, 20.0, 0.9)]))), Box::new(Fixed(Ok(tall))), 0.0).up_to(128.0);
        both.detect(&frame, &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn guided_windows_sit_on_the_stride_grid_around_each_guide_in_range() {
        // 640x480 from 32 px: the finest level at 0.8125 (528x400 padded), the second level's floor 128 px.
        let (z, size, range) = (0.8125, (528, 400), (24.0, 160.0));
        let g = |cx: f32, cy: f32, hgt: f32| {
            let half = hgt / 2.0;
            Detection::new(BBox { x0: cx - half, y0: cy - half, x1: cx + half, y1: cy + half }, 0.9)
        };
        let mut plan = Vec::new();
        // A 100 px face: 81 model px, 130 with the fit: a 192 window around its centre, on the 16 px grid.
        assert!(plan_windows(&[g(300.0, 200.0, 100.0)], z, size, range, &mut plan).is_some());
        let (k, ox, oy) = plan[0];
        assert_eq!((WINDOW_SIDES[k], ox % 16, oy % 16), (192, 0, 0));
        let (cx, cy) = (300.0 * z, 200.0 * z);
        let holds = |o: u32, c: f32| (o as f32) < c - 80.0 && c + 80.0 < (o + 192) as f32;
        assert!(holds(ox, cx) && holds(oy, cy), "{plan:?}");
        // At a corner the window is moved inside the level; boxes under or over the range get none; the same
        // window twice runs once.
        let guides = [g(5.0, 470.0, 40.0), g(100.0, 100.0, 20.0), g(400.0, 100.0, 300.0), g(5.0, 470.0, 41.0)];
        assert!(plan_windows(&guides, z, size, range, &mut plan).is_some());
        assert_eq!(plan, vec![(0, 0, 400 - 128)]);
        // Windows over 80% of the level, or a box too large for the largest window: the level runs whole.
        let crowd: Vec<Detection> = (0..12).map(|i| g(50.0 + 100.0 * (i % 6) as f32, 120.0 + 240.0 * (i / 6) as f32, 60.0)).collect();
        assert!(plan_windows(&crowd, z, size, range, &mut plan).is_none());
        assert!(plan_windows(&[g(300.0, 200.0, 155.0)], z, size, (24.0, 400.0), &mut plan).is_some());
        assert!(plan_windows(&[g(300.0, 200.0, 200.0)], z, size, (24.0, 400.0), &mut plan).is_none());
        // A level smaller than the window: whole.
        assert!(plan_windows(&[g(50.0, 50.0, 60.0)], z, (112, 112), range, &mut plan).is_none());
    }

    #[test]
    fn max_face_lays_out_fewer_passes_and_is_checked_against_min_face() {
        // mien-face from 16 px at 640x480: the frame itself, then 3x and 9x smaller; up to 128 px, the first alone.
        assert_eq!(mienface::pass_scales(640, 480, 16.0).len(), 3);
        assert_eq!(mienface::pass_scales_up_to(640, 480, 16.0, 128.0), vec![1.0]);
        assert_eq!(pyramid_scales_up_to(640, 480, 16.0, 100.0), vec![1.625, 0.40625]);
        let cfg = |min: Option<u32>, max: u32| DetectConfig {
            blur_also: Some(BlurAlsoConfig {
                kind: DetectorKind::MienFace,
                model: "m.onnx".into(),
                score_threshold: 0.3,
                min_face: min,
                max_face: Some(max),
                guide: true,
            }),
            ..DetectConfig::default()
        };
        assert!(cfg(Some(16), 128).validate().is_ok());
        // The guide steers a pyramid's finest level: another first detector is refused, naming the field.
        let other = DetectConfig { kind: DetectorKind::MienFace, ..cfg(Some(16), 128) };
        assert_eq!(other.validate().unwrap_err().0, "detect.blur_also.guide");
        assert_eq!(cfg(Some(16), 15).validate().unwrap_err().0, "detect.blur_also.max_face");
        // Without its own min_face, the second's floor is the first's (16 by default).
        assert_eq!(cfg(None, 12).validate().unwrap_err().0, "detect.blur_also.max_face");
    }

    #[test]
    fn blur_also_fails_the_frame_when_either_detector_fails_or_the_faces_overflow() {
        let frame = Frame::new(640, 480);
        let mut out = Detections::new();
        for (a, b) in [(Err(()), Ok(vec![])), (Ok(vec![at(0.0, 20.0, 0.9)]), Err(()))] {
            let mut both = BlurAlso::new(Box::new(Fixed(a)), Box::new(Fixed(b)), 0.4);
            assert!(matches!(both.detect(&frame, &mut out), Err(DetectError::Inference(_))));
        }
        // MAX_FACES / 2 + 10 faces from each, all apart: together more than the stage keeps, though each fits.
        let n = MAX_FACES / 2 + 10;
        let row = |y: f32| (0..n).map(|i| Detection::new(BBox { x0: i as f32 * 6.0, y0: y, x1: i as f32 * 6.0 + 5.0, y1: y + 5.0 }, 0.9)).collect();
        let mut both = BlurAlso::new(Box::new(Fixed(Ok(row(0.0)))), Box::new(Fixed(Ok(row(100.0)))), 0.4);
        match both.detect(&frame, &mut out) {
            Err(DetectError::TooManyFaces { found, max }) => assert_eq!((found, max), (2 * n, MAX_FACES)),
            other => panic!("{} faces must fail the frame, got {other:?}", 2 * n),
        }
    }
}
