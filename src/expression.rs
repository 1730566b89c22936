//! Expression: an `ExpressionClassifier` trait over face crops, with the 8 FER+ classes as its vocabulary.
//!
//! Crops are cut from the frame *before* privacy blurs it, live only in this process's memory (buffers sized
//! once at start and overwritten every frame), and are never written, logged or sent.

use crate::frame::{BBox, Frame, Rect};
use crate::model::{self, ModelError, Runnable};
use crate::pixels::Scaler;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::vocab::Emotion;


#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpressionKind {
    /// mien's own distilled student (`models/mien_student_int8.onnx`): 1x1xSxS grey, 8 FER+ classes.
    Mien,
    /// face-api.js FaceExpressionNet: 112x112 RGB, 7 classes (no contempt).
    Faceapi,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpressionConfig {
    pub enabled: bool,
    pub kind: ExpressionKind,
    pub model: String,
    /// Faces whose crop is smaller than this (pixels) are blurred but not classified.
    pub min_face: u32,
    /// Faces the detector is less sure of than this are blurred but not classified: privacy blurs at
    /// `detect.score_threshold` (recall first), labels come only from faces above this (precision first).
    pub min_score: f32,
    /// Turn each face crop so that the eyes are level (the detector's eye keypoints give the head's roll): the
    /// model was trained on upright faces and loses accuracy on tilted heads.
    pub align: bool,
    /// Per-track smoothing of the class probabilities over capture time (time constant, ms): a track's label
    /// changes when its face does, not with each frame's noise. 0 = off (each frame's own label).
    pub smoothing_ms: u32,
}

impl Default for ExpressionConfig {
    fn default() -> Self {
        ExpressionConfig {
            enabled: true,
            kind: ExpressionKind::Mien,
            model: "models/mien_student_int8.onnx".into(),
            min_face: 32,
            min_score: 0.75,
            align: true,
            smoothing_ms: DEFAULT_SMOOTHING_MS,
        }
    }
}

/// `expression.smoothing_ms` unless a profile says otherwise, chosen from `examples/label_flicker.rs`'s
/// measurements (docs/adapt.md, "Labels over time"): 500 ms cut label changes on still faces from 67.7 to 9.4 per
/// track-minute, and a real change showed after 2 frames (p90 6) at 15 frames/s.
pub const DEFAULT_SMOOTHING_MS: u32 = 500;

impl ExpressionConfig {
    /// Check ranges; the first bad value is reported with its field name.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let e = self;
        if e.enabled && e.model.is_empty() {
            return Err(("expression.model", "must name an ONNX file (or set expression.enabled = false)".into()));
        }
        if !(e.min_score >= 0.0 && e.min_score < 1.0) {
            return Err(("expression.min_score", format!("{} is outside 0..1", e.min_score)));
        }
        if !(8..=4096).contains(&e.min_face) {
            return Err(("expression.min_face", format!("{} is outside 8..=4096", e.min_face)));
        }
        if e.smoothing_ms > 60_000 {
            return Err(("expression.smoothing_ms", format!("{} is over 60000 (a minute)", e.smoothing_ms)));
        }
        Ok(())
    }
}

/// A classifier's answer for one face: the top class and its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expression {
    pub label: Emotion,
    pub confidence: f32,
    /// Every class's probability, in FER+ order (a class the model cannot output is 0): what per-track
    /// smoothing averages.
    pub probs: [f32; 8],
}

/// A face crop, sized for the classifier. Only `CropSet::extract` fills it.
pub struct FaceCrop {
    pub width: u32,
    pub height: u32,
    rgb: Vec<u8>,
}

impl FaceCrop {
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExpressionError {
    #[error("expression inference failed: {0}")]
    Inference(String),
    #[error("face crop failed: {0}")]
    Crop(#[from] crate::pixels::PixelError),
}

pub trait ExpressionClassifier: Send {
    /// Crop size the classifier takes (RGB).
    fn input_size(&self) -> (u32, u32);
    /// How to cut a face box into a crop for this model (square, scale around the box).
    fn crop_box(&self, face: &BBox) -> BBox;
    fn classify(&mut self, crop: &FaceCrop) -> Result<Expression, ExpressionError>;
    /// FER+ classes this model can never output (reported honestly in logs and docs).
    fn missing_classes(&self) -> &'static [Emotion];
    fn describe(&self) -> String;
    /// SHA-256 of the model file that was verified and loaded.
    fn sha256(&self) -> &str;
}

/// Reusable crop buffers, one per face slot, allocated once.
pub struct CropSet {
    crops: Vec<FaceCrop>,
    len: usize,
    scaler: Scaler,
    /// For a turned crop: the frame region around it, scaled to the crop's resolution (reused; wiped with the
    /// crops, since it holds face pixels).
    turned: Vec<u8>,
}

/// Below this roll (radians: 8 degrees) a face is cut upright. The student was trained with rotations up to 12
/// degrees and loses little below 10, while the detector's eye keypoints wobble by a few degrees on upright
/// faces: turning those too cost 0.3-3 points on upright FER+ val scenes. Chosen on 400 FER+ val faces in scenes
/// tilted 0, 15, 25 and 35 degrees (thresholds 2, 6, 8 and 10 degrees tried; 8 lost nothing on upright faces).
pub const MIN_ROLL: f32 = 8.0 * std::f32::consts::PI / 180.0;

impl CropSet {
    pub fn new(slots: usize, width: u32, height: u32) -> Self {
        let crops = (0..slots).map(|_| FaceCrop { width, height, rgb: vec![0; (width * height * 3) as usize] }).collect();
        CropSet { crops, len: 0, scaler: Scaler::default(), turned: Vec::new() }
    }

    /// Cut one crop per face from the (not yet blurred) frame: `crop_box` of the face's box, turned by the
    /// face's roll (radians, `Detection::roll`; 0 cuts it upright) around the box centre so that the eyes come
    /// out level. Faces beyond the slot count, or whose crop box is smaller than `min_side` pixels, get `None`.
    pub fn extract<'a>(
        &mut self,
        frame: &Frame,
        faces: impl Iterator<Item = Option<(&'a BBox, f32)>>,
        crop_box: impl Fn(&BBox) -> BBox,
        min_side: u32,
        slots_out: &mut Vec<Option<usize>>,
    ) -> Result<(), crate::pixels::PixelError> {
        self.len = 0;
        slots_out.clear();
        for face in faces {
            let Some((b, roll)) = face else {
                slots_out.push(None); // not to be classified
                continue;
            };
            let cb = crop_box(b);
            let r: Option<Rect> = cb.to_rect(frame.width, frame.height);
            match r {
                Some(r) if r.width().min(r.height()) >= min_side && self.len < self.crops.len() => {
                    let c = &mut self.crops[self.len];
                    let upright = roll.abs() < MIN_ROLL || !roll.is_finite();
                    // A crop box that runs off the frame (a face at its edge, a close-up) is cut square all the
                    // same, its missing part the frame's edge pixels repeated (the turned path samples that way),
                    // as the model was trained: clamped to the frame and resized, the face would be stretched.
                    let (w, h) = (frame.width as f32, frame.height as f32);
                    let inside = cb.x0 > -1.0 && cb.y0 > -1.0 && cb.x1 < w + 1.0 && cb.y1 < h + 1.0;
                    if upright && inside {
                        self.scaler.crop_resize(frame, r, &mut c.rgb, c.width, c.height)?;
                    } else {
                        let roll = if upright { 0.0 } else { roll };
                        turned_crop(&mut self.scaler, &mut self.turned, frame, b, &cb, roll, c)?;
                    }
                    slots_out.push(Some(self.len));
                    self.len += 1;
                }
                _ => slots_out.push(None),
            }
        }
        Ok(())
    }

    pub fn get(&self, i: usize) -> &FaceCrop {
        &self.crops[i]
    }

    /// Overwrite every crop with zeros (done after each frame: no face pixels linger in memory).
    pub fn wipe(&mut self) {
        for c in &mut self.crops[..self.len] {
            c.rgb.fill(0);
        }
        self.turned.fill(0);
        self.len = 0;
    }
}

/// The crop box `cb` of face `face`, turned by `roll` around the face centre, into `out`. The square around the
/// turned box is first scaled to the crop's resolution by the antialiasing resizer (a face is usually larger
/// than the crop), then sampled bilinearly along the turned axes at 1:1, so the turn itself adds no aliasing.
/// The box's offset from the face centre (the classifier's crop shift) turns with the face. Parts of the turned
/// box outside the frame repeat the frame's edge.
fn turned_crop(
    scaler: &mut Scaler,
    buf: &mut Vec<u8>,
    frame: &Frame,
    face: &BBox,
    cb: &BBox,
    roll: f32,
    out: &mut FaceCrop,
) -> Result<(), crate::pixels::PixelError> {
    let (cos, sin) = (roll.cos(), roll.sin());
    let ((fx, fy), (bx, by)) = (face.center(), cb.center());
    let (dx, dy) = (bx - fx, by - fy);
    let (cx, cy) = (fx + cos * dx - sin * dy, fy + sin * dx + cos * dy);
    let (ow, oh) = (out.width as f32, out.height as f32);
    let (sx, sy) = (cb.width() / ow, cb.height() / oh); // frame pixels per crop pixel
    // Half extents of the turned box, axis-aligned.
    let hx = (cos.abs() * cb.width() + sin.abs() * cb.height()) / 2.0;
    let hy = (sin.abs() * cb.width() + cos.abs() * cb.height()) / 2.0;
    let around = BBox { x0: cx - hx, y0: cy - hy, x1: cx + hx, y1: cy + hy };
    let Some(r) = around.to_rect(frame.width, frame.height) else {
        return Err(crate::pixels::PixelError::Resize(format!("turned crop {around:?} is outside the frame")));
    };
    let iw = ((r.width() as f32 / sx).round() as u32).max(1);
    let ih = ((r.height() as f32 / sy).round() as u32).max(1);
    buf.resize((iw * ih * 3) as usize, 0);
    scaler.crop_resize(frame, r, &mut buf[..(iw * ih * 3) as usize], iw, ih)?;
    // Crop pixel (u, v) -> frame point c + R(roll) * ((u, v) + 0.5 - size / 2) * (sx, sy) -> buffer pixel.
    let (kx, ky) = (iw as f32 / r.width() as f32, ih as f32 / r.height() as f32);
    let (x_max, y_max) = (iw as f32 - 1.0, ih as f32 - 1.0);
    for v in 0..out.height {
        for u in 0..out.width {
            let (px, py) = ((u as f32 + 0.5 - ow / 2.0) * sx, (v as f32 + 0.5 - oh / 2.0) * sy);
            let x = ((cx + cos * px - sin * py - r.x0 as f32) * kx - 0.5).clamp(0.0, x_max);
            let y = ((cy + sin * px + cos * py - r.y0 as f32) * ky - 0.5).clamp(0.0, y_max);
            let (x0, y0) = (x as u32, y as u32);
            let (x1, y1) = ((x0 + 1).min(iw - 1), (y0 + 1).min(ih - 1));
            let (ax, ay) = (x - x0 as f32, y - y0 as f32);
            let px = |xx: u32, yy: u32| &buf[((yy * iw + xx) * 3) as usize..][..3];
            let (p00, p10, p01, p11) = (px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1));
            let o = &mut out.rgb[((v * out.width + u) * 3) as usize..][..3];
            for ch in 0..3 {
                let top = p00[ch] as f32 + (p10[ch] as f32 - p00[ch] as f32) * ax;
                let bot = p01[ch] as f32 + (p11[ch] as f32 - p01[ch] as f32) * ax;
                o[ch] = (top + (bot - top) * ay).round() as u8;
            }
        }
    }
    Ok(())
}

/// face-api.js's FaceExpressionNet (rebuilt by `models/build_faceapi_expression.py`): 112x112 RGB 0..255,
/// 7 classes. It has no `contempt` class, so mien never reports contempt while it is the model.
pub struct FaceApiExpression {
    model: Runnable,
    name: String,
    sha256: String,
    input: Vec<f32>,
}

/// face-api's output order mapped onto FER+.
const FACEAPI_CLASSES: [Emotion; 7] = [
    Emotion::Neutral,
    Emotion::Happiness,
    Emotion::Sadness,
    Emotion::Anger,
    Emotion::Fear,
    Emotion::Disgust,
    Emotion::Surprise,
];

impl FaceApiExpression {
    pub const SIZE: u32 = 112;

    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::from_parsed(model::Parsed::open(path)?)
    }

    pub fn from_parsed(p: model::Parsed) -> Result<Self, ModelError> {
        let s = Self::SIZE as usize;
        let path = p.path.clone();
        let l = p.load(Some(&[1, s, s, 3]))?;
        Ok(FaceApiExpression {
            model: l.model,
            sha256: l.sha256,
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            input: vec![0.0; s * s * 3],
        })
    }
}

/// mien's own student (made by `models/expression/recipe.py`): one grey SxS face, per-image standardized,
/// logits for the 8 FER+ classes in FER+ order. The input size is read from the model file.
///
/// The same contract with an input named `face01` takes grey in [0, 1] instead: that is how converted peers
/// (`models/prepare.sh --peers`, no contempt class) are evaluated through the same crop path.
pub struct MienExpression {
    model: Runnable,
    name: String,
    sha256: String,
    size: u32,
    /// Input named `face01`: grey in [0, 1], no standardization (converted peers).
    unit: bool,
    input: Vec<f32>,
}

impl MienExpression {
    /// A BlazeFace box is tighter than a FER2013 crop (which shows forehead, chin and cheeks): the crop is a
    /// square this many times the box's longer side, centred this fraction of the box height lower.
    /// Measured by running BlazeFace on FER+ validation faces (`mien eval --ferplus DIR --split val --measure-crop`).
    /// Measured on 1,707 of 2,000 val faces found by the full-range BlazeFace: median 1.134 and -0.036.
    pub const CROP_SCALE: f32 = 1.13;
    pub const CROP_SHIFT: f32 = -0.04;

    /// The square crop around a detected face that reproduces FER's framing (`CROP_SCALE`, `CROP_SHIFT`).
    pub fn crop_box_for(face: &BBox) -> BBox {
        let b = square_box(face, Self::CROP_SCALE);
        let dy = face.height() * Self::CROP_SHIFT;
        BBox { y0: b.y0 + dy, y1: b.y1 + dy, ..b }
    }

    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::from_parsed(model::Parsed::open(path)?)
    }

    pub fn from_parsed(p: model::Parsed) -> Result<Self, ModelError> {
        let path = p.path.clone();
        let model::Loaded { model, sha256, shape, input_name } = p.load(None)?;
        let size = match shape[..] {
            [1, 1, h, w] if h == w && (16..=256).contains(&h) => h as u32,
            _ => {
                return Err(ModelError::Tract {
                    path: path.into(),
                    msg: format!("input shape {shape:?}: a mien expression model takes 1x1xSxS grey (16 <= S <= 256)"),
                })
            }
        };
        Ok(MienExpression {
            model,
            sha256,
            size,
            unit: input_name == "face01",
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            input: vec![0.0; (size * size) as usize],
        })
    }
}

/// Grey (BT.601 luma, as FER2013's pixels) and per-image standardization: (x - mean) / (std + 1e-3), x in [0, 1].
/// The recipe trains on exactly this (`models/expression/data.py: standardize`).
pub fn grey_standardized(rgb: &[u8], out: &mut [f32]) {
    grey01(rgb, out);
    let n = out.len() as f32;
    let mean = out.iter().sum::<f32>() / n;
    let var = out.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / (n - 1.0).max(1.0);
    let k = 1.0 / (var.sqrt() + 1e-3);
    for v in out.iter_mut() {
        *v = (*v - mean) * k;
    }
}

/// RGB24 to grey in [0, 1] (BT.601 luma).
pub fn grey01(rgb: &[u8], out: &mut [f32]) {
    for (d, p) in out.iter_mut().zip(rgb.chunks_exact(3)) {
        *d = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) / 255.0;
    }
}

fn softmax_top(logits: &[f32], classes: &[Emotion]) -> Expression {
    let m = logits.iter().copied().fold(f32::MIN, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - m).exp()).sum();
    let probs: Vec<f32> = logits.iter().map(|v| ((v - m).exp() / sum).clamp(0.0, 1.0)).collect();
    top_class(&probs, classes)
}

impl ExpressionClassifier for MienExpression {
    fn input_size(&self) -> (u32, u32) {
        (self.size, self.size)
    }

    fn crop_box(&self, face: &BBox) -> BBox {
        Self::crop_box_for(face)
    }

    fn classify(&mut self, crop: &FaceCrop) -> Result<Expression, ExpressionError> {
        if self.unit {
            grey01(crop.rgb(), &mut self.input);
        } else {
            grey_standardized(crop.rgb(), &mut self.input);
        }
        let s = self.size as usize;
        let out = model::run_f32(&self.model, &[1, 1, s, s], &self.input)
            .map_err(|e| ExpressionError::Inference(format!("{e:#}")))?;
        self.input.fill(0.0);
        let logits = model::output_f32(&out[0]).map_err(|e| ExpressionError::Inference(format!("{e:#}")))?;
        if logits.len() != Emotion::ALL.len() {
            return Err(ExpressionError::Inference(format!("{} outputs, expected 8", logits.len())));
        }
        Ok(softmax_top(logits, &Emotion::ALL))
    }

    fn missing_classes(&self) -> &'static [Emotion] {
        if self.unit {
            &[Emotion::Contempt]
        } else {
            &[]
        }
    }

    fn sha256(&self) -> &str {
        &self.sha256
    }

    fn describe(&self) -> String {
        let what = if self.unit { "peer expression" } else { "mien expression" };
        format!("{what} {} ({}x{} grey) sha256:{}", self.name, self.size, self.size, &self.sha256[..12])
    }
}

/// Load the classifier of `kind` from `path`.
pub fn load(kind: ExpressionKind, path: &Path) -> Result<Box<dyn ExpressionClassifier>, ModelError> {
    Ok(match kind {
        ExpressionKind::Mien => Box::new(MienExpression::load(path)?),
        ExpressionKind::Faceapi => Box::new(FaceApiExpression::load(path)?),
    })
}

/// Load the classifier a profile's `[expression]` names; `None` (logged) when disabled or unloadable: blur
/// still runs without it.
pub fn load_configured(cfg: &ExpressionConfig) -> Option<Box<dyn ExpressionClassifier>> {
    if !cfg.enabled {
        return None;
    }
    match load(cfg.kind, Path::new(&cfg.model)) {
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

/// Load a model file of either kind, told apart by its declared input (1x1xSxS grey: mien; 1x112x112x3:
/// face-api). The file is read and hashed once.
pub fn load_any(path: &Path) -> Result<Box<dyn ExpressionClassifier>, ModelError> {
    let p = model::Parsed::open(path)?;
    let (_, dims) = p.input()?;
    match dims[..] {
        [_, Some(1), Some(_), Some(_)] => Ok(Box::new(MienExpression::from_parsed(p)?)),
        [_, Some(_), Some(_), Some(3)] => Ok(Box::new(FaceApiExpression::from_parsed(p)?)),
        _ => Err(ModelError::Tract {
            path: path.into(),
            msg: format!("input shape {dims:?} is neither mien's 1x1xSxS nor face-api's 1x112x112x3"),
        }),
    }
}

/// A classifier read through another crop box: a square `scale` times the face box's longer side, its centre
/// moved by `shift` box heights (down when positive). For measuring how much a model depends on the crop
/// convention (`mien eval --crop-scale`); the firmware's own crop is the model's.
pub struct Reframed {
    pub inner: Box<dyn ExpressionClassifier>,
    pub scale: f32,
    pub shift: f32,
}

impl ExpressionClassifier for Reframed {
    fn input_size(&self) -> (u32, u32) {
        self.inner.input_size()
    }
    fn crop_box(&self, face: &BBox) -> BBox {
        let b = square_box(face, self.scale);
        let dy = face.height() * self.shift;
        BBox { y0: b.y0 + dy, y1: b.y1 + dy, ..b }
    }
    fn classify(&mut self, crop: &FaceCrop) -> Result<Expression, ExpressionError> {
        self.inner.classify(crop)
    }
    fn missing_classes(&self) -> &'static [Emotion] {
        self.inner.missing_classes()
    }
    fn describe(&self) -> String {
        let inner = self.inner.describe();
        format!("{inner} through a crop of {}x the face box, shifted {:+} box heights", self.scale, self.shift)
    }
    fn sha256(&self) -> &str {
        self.inner.sha256()
    }
}

/// Square box around the face centre, `scale` times its longer side.
pub fn square_box(face: &BBox, scale: f32) -> BBox {
    let (cx, cy) = face.center();
    let half = face.width().max(face.height()) * scale / 2.0;
    BBox { x0: cx - half, y0: cy - half, x1: cx + half, y1: cy + half }
}

fn top_class(probs: &[f32], classes: &[Emotion]) -> Expression {
    let (i, p) = probs.iter().enumerate().fold((0, f32::MIN), |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc });
    let mut all = [0f32; 8];
    for (c, &p) in classes.iter().zip(probs) {
        all[c.index()] = p;
    }
    Expression { label: classes[i], confidence: p, probs: all }
}

impl ExpressionClassifier for FaceApiExpression {
    fn input_size(&self) -> (u32, u32) {
        (Self::SIZE, Self::SIZE)
    }

    fn crop_box(&self, face: &BBox) -> BBox {
        // face-api pads its detector's box to a square; BlazeFace boxes are a little tighter than
        // face-api's own detector, hence the 1.1.
        square_box(face, 1.1)
    }

    fn classify(&mut self, crop: &FaceCrop) -> Result<Expression, ExpressionError> {
        for (d, &s) in self.input.iter_mut().zip(crop.rgb()) {
            *d = s as f32;
        }
        let s = Self::SIZE as usize;
        let out = model::run_f32(&self.model, &[1, s, s, 3], &self.input)
            .map_err(|e| ExpressionError::Inference(format!("{e:#}")))?;
        let probs = model::output_f32(&out[0]).map_err(|e| ExpressionError::Inference(format!("{e:#}")))?;
        if probs.len() != FACEAPI_CLASSES.len() {
            return Err(ExpressionError::Inference(format!("{} outputs, expected 7", probs.len())));
        }
        self.input.fill(0.0);
        Ok(top_class(probs, &FACEAPI_CLASSES))
    }

    fn missing_classes(&self) -> &'static [Emotion] {
        &[Emotion::Contempt]
    }

    fn sha256(&self) -> &str {
        &self.sha256
    }

    fn describe(&self) -> String {
        format!("face-api expression {} sha256:{}", self.name, &self.sha256[..12])
    }
}

/// Per-face latency of classifiers that take turns, single thread, through the firmware's whole classify path
/// (crop cut and scaled from a frame outside the timing; grey conversion, standardization and tract inside it).
/// Taking turns over rounds means a change in machine load hits every model alike; `cargo bench --bench
/// expression` and `mien doctor` both measure this way.
pub struct Timing {
    /// `rounds[model][round]`: mean ms per face of that model in that round.
    pub rounds: Vec<Vec<f64>>,
}

impl Timing {
    /// `rounds` rounds of `per_round` classifications per model, after `warm_up` unmeasured ones; the crops are
    /// `face` cut from `frames` in turn.
    pub fn measure(
        models: &mut [Box<dyn ExpressionClassifier>],
        frames: &[Frame],
        face: &BBox,
        warm_up: usize,
        rounds: usize,
        per_round: usize,
    ) -> Result<Timing, ExpressionError> {
        let mut out = vec![Vec::with_capacity(rounds); models.len()];
        for c in models.iter_mut() {
            mean_ms(c.as_mut(), frames, face, warm_up)?;
        }
        for _ in 0..rounds {
            for (i, c) in models.iter_mut().enumerate() {
                out[i].push(mean_ms(c.as_mut(), frames, face, per_round)?);
            }
        }
        Ok(Timing { rounds: out })
    }

    /// Median over the rounds of model `i`'s ms per face.
    pub fn median_ms(&self, i: usize) -> f64 {
        median(self.rounds[i].clone())
    }

    /// Model `a`'s time over model `b`'s: (median of the per-round ratios, lowest, highest).
    pub fn ratio(&self, a: usize, b: usize) -> (f64, f64, f64) {
        let r: Vec<f64> = self.rounds[a].iter().zip(&self.rounds[b]).map(|(x, y)| x / y).collect();
        let (lo, hi) = r.iter().fold((f64::MAX, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
        (median(r), lo, hi)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Mean ms per face over `n` classifications (0 for `n` = 0).
fn mean_ms(c: &mut dyn ExpressionClassifier, frames: &[Frame], face: &BBox, n: usize) -> Result<f64, ExpressionError> {
    let (w, h) = c.input_size();
    let mut crops = CropSet::new(1, w, h);
    let mut slots = Vec::new();
    let mut total = std::time::Duration::ZERO;
    for i in 0..n {
        crops.extract(&frames[i % frames.len()], std::iter::once(Some((face, 0.0))), |b| c.crop_box(b), 1, &mut slots)?;
        if slots.first() != Some(&Some(0)) {
            return Err(ExpressionError::Inference(format!("timing: face box {face:?} is outside the frame")));
        }
        let t = std::time::Instant::now();
        std::hint::black_box(c.classify(crops.get(0))?);
        total += t.elapsed();
    }
    Ok(if n == 0 { 0.0 } else { total.as_secs_f64() * 1e3 / n as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emotion_names_round_trip() {
        for e in Emotion::ALL {
            assert_eq!(e.as_str().parse::<Emotion>().unwrap(), e);
            assert_eq!(serde_json::to_string(&e).unwrap(), format!("\"{}\"", e.as_str()));
        }
        assert!("happy".parse::<Emotion>().is_err());
    }

    #[test]
    fn grey_standardized_is_zero_mean_unit_std() {
        let rgb: Vec<u8> = (0..16 * 16).flat_map(|i| [(i % 256) as u8, (i * 7 % 256) as u8, 40]).collect();
        let mut out = vec![0.0; 16 * 16];
        grey_standardized(&rgb, &mut out);
        let mean = out.iter().sum::<f32>() / 256.0;
        let var = out.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 255.0;
        assert!(mean.abs() < 1e-4 && (var.sqrt() - 1.0).abs() < 1e-2, "mean {mean} std {}", var.sqrt());
        // A flat crop (no contrast) stays finite.
        grey_standardized(&[77u8; 16 * 16 * 3], &mut out);
        assert!(out.iter().all(|v| v.is_finite() && v.abs() < 1e-3));
    }

    /// A 240x200 white frame with a dark bar, 6 px thick, through (120, 100) at `deg` degrees (y down).
    fn bar_frame(deg: f32) -> Frame {
        let mut f = Frame::new(240, 200);
        let (c, s) = (deg.to_radians().cos(), deg.to_radians().sin());
        for y in 0..200 {
            for x in 0..240 {
                let (dx, dy) = (x as f32 + 0.5 - 120.0, y as f32 + 0.5 - 100.0);
                let off = -s * dx + c * dy; // distance across the bar
                let v = if off.abs() < 3.0 { 20 } else { 230 };
                f.data[(y * 240 + x) * 3..][..3].fill(v);
            }
        }
        f
    }

    /// Mean grey of crop rows `rows`, columns `cols`.
    fn mean(c: &FaceCrop, rows: std::ops::Range<u32>, cols: std::ops::Range<u32>) -> f32 {
        let (mut sum, mut n) = (0f32, 0f32);
        for y in rows {
            for x in cols.clone() {
                sum += c.rgb[((y * c.width + x) * 3) as usize] as f32;
                n += 1.0;
            }
        }
        sum / n
    }

    #[test]
    fn a_tilted_face_is_cut_level_and_an_upright_one_as_before() {
        // The bar leans 30 degrees: cut with roll 30 degrees, it crosses the crop's middle rows from edge to edge.
        let face = BBox { x0: 80.0, y0: 60.0, x1: 160.0, y1: 140.0 };
        let mut crops = CropSet::new(2, 48, 48);
        let mut slots = Vec::new();
        let frame = bar_frame(30.0);
        let turned = [(&face, 30f32.to_radians()), (&face, 0.0)];
        crops.extract(&frame, turned.iter().copied().map(Some), |b| *b, 1, &mut slots).unwrap();
        assert_eq!(slots, [Some(0), Some(1)]);
        let level = crops.get(0);
        for cols in [0..8, 20..28, 40..48] {
            assert!(mean(level, 23..25, cols.clone()) < 60.0, "turned crop: the bar is not level at columns {cols:?}");
        }
        assert!(mean(level, 0..10, 0..48) > 200.0 && mean(level, 38..48, 0..48) > 200.0, "turned crop: bar off the middle");
        // Cut upright, the same bar is not level: its ends are far from the middle rows.
        let upright = crops.get(1);
        assert!(mean(upright, 23..25, 0..8) > 150.0 && mean(upright, 23..25, 40..48) > 150.0);
        // A level bar cut with roll 0 is level too (the upright path), and the crops are wiped after use.
        crops.extract(&bar_frame(0.0), std::iter::once(Some((&face, 0.0))), |b| *b, 1, &mut slots).unwrap();
        assert!(mean(crops.get(0), 23..25, 0..48) < 60.0);
        crops.wipe();
        assert!(crops.turned.iter().all(|&v| v == 0), "the turned crop's buffer is wiped with the crops");
    }

    #[test]
    fn a_turned_crop_keeps_the_crop_shift_along_the_face() {
        // A crop box shifted up from the face (as mien's CROP_SHIFT does) on a face turned 90 degrees: the shift
        // turns with it, so the crop's centre moves sideways in the frame, towards the top of the head.
        // The frame is dark left of x = 100, bright right of it; the face box is centred on x = 100.
        let mut f = Frame::new(200, 200);
        for y in 0..200 {
            for x in 0..200 {
                f.data[(y * 200 + x) * 3..][..3].fill(if x < 100 { 30 } else { 220 });
            }
        }
        let face = BBox { x0: 60.0, y0: 60.0, x1: 140.0, y1: 140.0 };
        let shifted = |b: &BBox| BBox { x0: b.x0, y0: b.y0 - 30.0, x1: b.x1, y1: b.y1 - 30.0 };
        let mut crops = CropSet::new(1, 48, 48);
        let mut slots = Vec::new();
        // Roll +90 degrees (clockwise on screen): the top of the head points to +x, where the frame is bright.
        // Centre 30 px right of the face centre, at x = 130, crop 80 px wide: 10 of its 80 columns are dark.
        // Roll -90 degrees: the mirror image, 70 of 80 dark. Unturned, the shift would give 40 of 80 either way.
        for (roll, want) in [(std::f32::consts::FRAC_PI_2, 10.0 / 80.0), (-std::f32::consts::FRAC_PI_2, 70.0 / 80.0)] {
            crops.extract(&f, std::iter::once(Some((&face, roll))), shifted, 1, &mut slots).unwrap();
            let dark = crops.get(0).rgb.chunks_exact(3).filter(|p| p[0] < 128).count() as f32 / (48.0 * 48.0);
            assert!((dark - want).abs() < 0.03, "roll {roll}: dark share {dark}, want {want}");
        }
    }

    #[test]
    fn a_crop_box_off_the_frame_is_cut_square_with_the_edge_repeated() {
        // A 100x100 frame: dark columns x < 20, bright elsewhere, and a dark row band at y 40..60. The crop box is
        // 80 px square with its left 30 px off the frame. Cut square, crop column u is frame column
        // (u + 0.5) * 80 / 48 - 30: the first 18 columns (30 px) repeat frame column 0 (dark), then 12 dark
        // columns (x 0..20), then bright. Clamped and stretched, the dark part would be 20 of 50 px, 19 columns.
        let mut f = Frame::new(100, 100);
        for y in 0..100 {
            for x in 0..100 {
                let v = if x < 20 || (40..60).contains(&y) { 20 } else { 230 };
                f.data[(y * 100 + x) * 3..][..3].fill(v);
            }
        }
        let face = BBox { x0: -30.0, y0: 10.0, x1: 50.0, y1: 90.0 };
        let mut crops = CropSet::new(1, 48, 48);
        let mut slots = Vec::new();
        crops.extract(&f, std::iter::once(Some((&face, 0.0))), |b| *b, 1, &mut slots).unwrap();
        assert_eq!(slots, [Some(0)]);
        let c = crops.get(0);
        let dark = (0..48).filter(|&u| mean(c, 0..10, u..u + 1) < 128.0).count();
        assert!((29..=31).contains(&dark), "{dark} dark columns, want 30 (18 repeated + 12 of the frame)");
        // The rows keep their scale: the band (frame rows 40..60, crop rows 18..30) stays where it was.
        assert!(mean(c, 19..29, 40..48) < 60.0 && mean(c, 10..16, 40..48) > 200.0 && mean(c, 32..40, 40..48) > 200.0);
        // A box inside the frame takes the plain path, as before: the same pixels as a direct resize.
        let inner = BBox { x0: 10.0, y0: 10.0, x1: 90.0, y1: 90.0 };
        crops.extract(&f, std::iter::once(Some((&inner, 0.0))), |b| *b, 1, &mut slots).unwrap();
        let mut direct = vec![0u8; 48 * 48 * 3];
        let rect = inner.to_rect(100, 100).unwrap();
        Scaler::default().crop_resize(&f, rect, &mut direct, 48, 48).unwrap();
        assert_eq!(crops.get(0).rgb, direct);
    }

    #[test]
    fn softmax_confidence_is_a_probability() {
        let e = softmax_top(&[0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], &Emotion::ALL);
        assert_eq!(e.label, Emotion::Happiness);
        let want = 2f32.exp() / (2f32.exp() + 7.0);
        assert!((e.confidence - want).abs() < 1e-5);
    }

    #[test]
    fn top_class_maps_faceapi_order() {
        let e = top_class(&[0.1, 0.0, 0.0, 0.0, 0.7, 0.1, 0.1], &FACEAPI_CLASSES);
        assert_eq!(e.label, Emotion::Fear);
        assert!((e.confidence - 0.7).abs() < 1e-6);
    }
}
