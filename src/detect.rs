//! Face detection: a `FaceDetector` trait returning boxes in frame coordinates, and MediaPipe BlazeFace in tract.
//!
//! Each detector owns its model's pre-processing and decoding (anchors, NMS), as Frigate's detector plugins do;
//! the pipeline only sees `Detection`s.

use crate::frame::{BBox, Frame};
use crate::model::{self, ModelError, Runnable};
use crate::pixels::Scaler;
use std::path::Path;

/// Most faces one frame can report (the rest are dropped, lowest score first).
pub const MAX_FACES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
    /// In-plane rotation of the face (head roll), radians, from the detector's two eye keypoints: the angle of
    /// the eye line against the image's x axis, in (-pi/2, pi/2], positive when the face leans clockwise on
    /// screen (y points down). 0 for an upright face, a face too small for its eyes to tell, or a detector
    /// without keypoints.
    pub roll: f32,
}

impl Detection {
    /// An upright face (roll 0).
    pub fn new(bbox: BBox, score: f32) -> Self {
        Detection { bbox, score, roll: 0.0 }
    }
}

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
    #[error("detector pre-processing failed: {0}")]
    Preprocess(#[from] crate::pixels::PixelError),
}

pub trait FaceDetector: Send {
    /// Find faces in `frame`; boxes in frame pixels, sorted by score, highest first.
    fn detect(&mut self, frame: &Frame, out: &mut Detections) -> Result<(), DetectError>;
    /// Model identity for logs and status (file name and SHA-256).
    fn describe(&self) -> String;
    /// SHA-256 of the model file that was verified and loaded.
    fn sha256(&self) -> &str;
}

/// Which BlazeFace: short range (faces within ~2 m, 128x128 input) or full range (~5 m, 192x192).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlazeFaceKind {
    ShortRange,
    FullRange,
}

impl BlazeFaceKind {
    fn input_size(self) -> u32 {
        match self {
            BlazeFaceKind::ShortRange => 128,
            BlazeFaceKind::FullRange => 192,
        }
    }
    /// (stride, anchors per cell), from MediaPipe's SsdAnchorsCalculator options for each graph.
    fn anchor_spec(self) -> &'static [(u32, usize)] {
        match self {
            BlazeFaceKind::ShortRange => &[(8, 2), (16, 6)],
            BlazeFaceKind::FullRange => &[(4, 1)],
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
        let size = kind.input_size();
        let (model, sha256) = model::load_f32(path, &[1, 3, size as usize, size as usize])?;
        let anchors = anchors(size, kind.anchor_spec());
        let me = BlazeFace {
            kind,
            model,
            sha256,
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            size,
            anchors,
            score_threshold,
            nms_iou,
            scaler: Scaler::default(),
            letterbox: vec![0; (size * size * 3) as usize],
            input: vec![0.0; (size * size * 3) as usize],
            candidates: Vec::with_capacity(256),
        };
        // One dry run checks that the outputs match this kind's anchors (a wrong `kind` is caught at start).
        let (n_reg, n_cls) = me.output_counts().map_err(|msg| ModelError::Tract { path: path.into(), msg })?;
        if n_reg != me.anchors.len() || n_cls != me.anchors.len() {
            return Err(ModelError::Tract {
                path: path.into(),
                msg: format!(
                    "outputs have {n_reg}/{n_cls} anchors, {kind:?} expects {}: is detect.kind right?",
                    me.anchors.len()
                ),
            });
        }
        Ok(me)
    }

    fn output_counts(&self) -> Result<(usize, usize), String> {
        let s = self.size as usize;
        let out = model::run_f32(&self.model, &[1, 3, s, s], &self.input).map_err(|e| format!("{e:#}"))?;
        if out.len() != 2 {
            return Err(format!("expected 2 outputs, got {}", out.len()));
        }
        Ok((out[0].shape().get(1).copied().unwrap_or(0), out[1].shape().get(1).copied().unwrap_or(0)))
    }
}

fn anchors(size: u32, spec: &[(u32, usize)]) -> Vec<[f32; 2]> {
    let mut a = Vec::new();
    for &(stride, per_cell) in spec {
        let g = size / stride;
        for y in 0..g {
            for x in 0..g {
                for _ in 0..per_cell {
                    a.push([(x as f32 + 0.5) / g as f32, (y as f32 + 0.5) / g as f32]);
                }
            }
        }
    }
    a
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-80.0, 80.0)).exp())
}

/// Weighted non-maximum suppression (as MediaPipe does): overlapping candidates are merged into one box,
/// their coordinates averaged by score, which keeps boxes steady from frame to frame.
pub fn weighted_nms(cands: &mut Vec<Detection>, iou: f32, out: &mut Detections) {
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.clear();
    while !cands.is_empty() {
        let top = cands[0];
        let (mut acc, mut wsum, mut roll_w) = ([0f32; 5], 0f32, 0f32);
        cands.retain(|c| {
            if c.bbox.iou(&top.bbox) > iou {
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
        if out.push(Detection { bbox: merged, score: top.score, roll }).is_err() {
            log::warn!("more than {MAX_FACES} faces in one frame; the rest are not reported");
            break;
        }
    }
}

impl FaceDetector for BlazeFace {
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
        // NCHW, [-1, 1]; the padding is black (-1), as in MediaPipe's letterbox.
        let plane = (s * s) as usize;
        self.input.fill(-1.0);
        for y in 0..rh as usize {
            for x in 0..rw as usize {
                let p = &self.letterbox[(y * rw as usize + x) * 3..][..3];
                for c in 0..3 {
                    self.input[c * plane + y * s as usize + x] = p[c] as f32 / 127.5 - 1.0;
                }
            }
        }
        let su = s as usize;
        let outputs = model::run_f32(&self.model, &[1, 3, su, su], &self.input)
            .map_err(|e| DetectError::Inference(format!("{e:#}")))?;
        let reg = model::output_f32(&outputs[0]).map_err(|e| DetectError::Inference(format!("{e:#}")))?;
        let cls = model::output_f32(&outputs[1]).map_err(|e| DetectError::Inference(format!("{e:#}")))?;
        let n = self.anchors.len();
        if reg.len() < n * 16 || cls.len() < n {
            return Err(DetectError::Inference(format!("output sizes {} / {} for {n} anchors", reg.len(), cls.len())));
        }
        let fs = s as f32;
        let back = 1.0 / scale; // model pixels -> frame pixels
        self.candidates.clear();
        for (i, a) in self.anchors.iter().enumerate() {
            let score = sigmoid(cls[i]);
            if score < self.score_threshold {
                continue;
            }
            let r = &reg[i * 16..i * 16 + 4];
            let cx = a[0] * fs + r[0];
            let cy = a[1] * fs + r[1];
            let (w, h) = (r[2], r[3]);
            let bbox = BBox {
                x0: (cx - w / 2.0) * back,
                y0: (cy - h / 2.0) * back,
                x1: (cx + w / 2.0) * back,
                y1: (cy + h / 2.0) * back,
            };
            // Keypoints 0 and 1 are the eyes, offsets from the anchor like the box centre (MediaPipe's layout).
            // On a small face they are a few model pixels apart and their angle is noise: such faces count
            // as upright.
            let k = &reg[i * 16 + 4..i * 16 + 8];
            let roll = eye_line_roll([k[0], k[1]], [k[2], k[3]]);
            let apart = (k[2] - k[0]).hypot(k[3] - k[1]);
            let roll = if apart >= MIN_EYE_DISTANCE { roll } else { f32::NAN }; // NaN: no roll (NMS skips it)
            if bbox.width() > 1.0 && bbox.height() > 1.0 && bbox.x0.is_finite() && bbox.y1.is_finite() {
                self.candidates.push(Detection { bbox, score, roll });
            }
        }
        weighted_nms(&mut self.candidates, self.nms_iou, out);
        Ok(())
    }

    fn sha256(&self) -> &str {
        &self.sha256
    }

    fn describe(&self) -> String {
        format!("BlazeFace {:?} {} sha256:{}", self.kind, self.name, &self.sha256[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let d = |score: f32, roll: f32| Detection { bbox, score, roll };
        let mut c = vec![d(0.6, 0.2), d(0.2, 0.6), d(0.9, f32::NAN)];
        let mut out = Detections::new();
        weighted_nms(&mut c, 0.3, &mut out);
        assert_eq!(out.len(), 1);
        assert!((out[0].roll - 0.3).abs() < 1e-6, "candidates without a roll do not count: {}", out[0].roll);
        // No candidate with a roll: the face counts as upright.
        let mut c = vec![d(0.9, f32::NAN), d(0.5, f32::NAN)];
        weighted_nms(&mut c, 0.3, &mut out);
        assert_eq!(out[0].roll, 0.0);
    }

    #[test]
    fn anchor_counts_match_mediapipe() {
        assert_eq!(anchors(128, BlazeFaceKind::ShortRange.anchor_spec()).len(), 896);
        assert_eq!(anchors(192, BlazeFaceKind::FullRange.anchor_spec()).len(), 2304);
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_separate_faces() {
        let b = |x: f32, s: f32| Detection::new(BBox { x0: x, y0: 0.0, x1: x + 10.0, y1: 10.0 }, s);
        let mut c = vec![b(0.0, 0.9), b(1.0, 0.6), b(50.0, 0.7)];
        let mut out = Detections::new();
        weighted_nms(&mut c, 0.3, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        assert!(out[0].bbox.x0 > 0.0 && out[0].bbox.x0 < 1.0);
        assert_eq!(out[1].bbox.x0, 50.0);
    }
}
