//! mien's own detector (`detect.kind = "mien-face"`, `models/mien_face.onnx`, trained by `models/detector/`):
//! one pass of a small anchor-free network over the frame at its own resolution finds faces from about
//! `MIN_MODEL_FACE` pixels up, where BlazeFace needs a pyramid whose first level is larger than the frame. Faces
//! larger than the heads are trained for are found by further passes over the frame scaled down by `PASS_STEP`.
//!
//! The model's outputs, one per stride (8, 16, 32), are 1x5xH/sxW/s: channel 0 the face score in [0, 1], channels
//! 1-4 the distances from the cell's centre to the box's left, top, right and bottom sides, in input pixels (the
//! recipe folds the sigmoid and the scale into the graph). Its input is RGB in [0, 1], sides multiples of 32.

use super::{multi_scale, weighted_nms, DetectError, Detection, Detections, FaceDetector, Level, MultiScale};
use crate::frame::{BBox, Frame};
use crate::model::{self, ModelError};
use std::path::Path;

/// The heads' strides, in the order of the model's outputs.
pub const STRIDES: [u32; 3] = [8, 16, 32];
/// Smallest face (its height in model input pixels) the first pass is laid out for. One pass alone finds 0.97 of
/// held-out 16 px faces and 0.83 at 14 (`models/detector/recipe.py scales`); with 16 px faces scaled to 14 the
/// scale sweep missed one of 132 at 640x480, at 16 (the frame's own size for `min_face` 16) none
/// (`models/detector/README.md`).
pub const MIN_MODEL_FACE: f32 = 16.0;
/// Largest face (model input pixels) one pass is trusted with: recall 0.99-1.00 from 96 to 280 px in one pass,
/// 0.98 at 320 (`recipe.py scales`).
pub const MAX_MODEL_FACE: f32 = 200.0;
/// Each further pass runs the frame this many times smaller than the one before: with the range above (a factor
/// 12.5) consecutive passes overlap by a factor 4.2.
pub const PASS_STEP: f32 = 3.0;
/// The first pass never scales the frame up by more than this (a `min_face` below `MIN_MODEL_FACE` costs the
/// square of it).
const MAX_UPSCALE: f32 = 2.0;

/// The box the network draws (the whole face crop, as the training faces were cut) in the full-range BlazeFace
/// convention the crop and blur margins were measured on: FER-style crops are 1.134 times the full-range box, their
/// centre 0.036 box heights above it (`expression::CropSet`).
const TO_FULL_RANGE: (f32, f32) = (1.0 / 1.134, 0.036);

/// The scales of the passes for a `w` x `h` frame: the first maps `min_face` to `MIN_MODEL_FACE`, each next one is
/// `PASS_STEP` times smaller, and the last one holds a face as tall as the frame's longer side.
pub fn pass_scales(w: u32, h: u32, min_face: f32) -> Vec<f32> {
    pass_scales_up_to(w, h, min_face, f32::INFINITY)
}

/// `pass_scales` for faces up to `max_face` px (or the frame's longer side, if smaller) only.
pub fn pass_scales_up_to(w: u32, h: u32, min_face: f32, max_face: f32) -> Vec<f32> {
    multi_scale((w.max(h) as f32).min(max_face), min_face, (MIN_MODEL_FACE, MAX_MODEL_FACE), PASS_STEP, MAX_UPSCALE)
}

/// The passes for `w` x `h` frames (levels padded to multiples of 32, without anchors).
fn passes(parsed: &model::Parsed, w: u32, h: u32, min_face: f32, max_face: f32) -> Result<Vec<Level>, ModelError> {
    let scales = pass_scales_up_to(w, h, min_face, max_face);
    let passes = scales.into_iter().map(|z| Level::new(parsed, (w, h), z, 32, &[])).collect::<Result<Vec<_>, _>>()?;
    log::info!(
        "detect: mien-face for {w}x{h}, faces from {min_face} px: passes {}",
        passes.iter().map(|p| format!("{}x{}", p.iw, p.ih)).collect::<Vec<_>>().join(", ")
    );
    Ok(passes)
}

pub struct MienFace {
    core: MultiScale,
}

impl MienFace {
    pub fn load(path: &Path, min_face: u32, score_threshold: f32, nms_iou: f32) -> Result<Self, ModelError> {
        let me = MienFace { core: MultiScale::open(path, min_face, score_threshold, nms_iou)? };
        me.check_outputs()?;
        Ok(me)
    }

    /// Lay the passes out for faces up to `max_face` px only (`f32::INFINITY`: the whole frame).
    pub fn up_to(mut self, max_face: f32) -> Self {
        self.core.max_face = max_face;
        self
    }

    /// One dry run on a 64x64 input: three outputs of five channels on the grids of strides 8, 16 and 32, so that a
    /// wrong file or a wrong `detect.kind` is caught at start rather than on the first frame.
    fn check_outputs(&self) -> Result<(), ModelError> {
        let parsed = &self.core.parsed;
        let err = |msg: String| ModelError::Tract { path: parsed.path.clone(), msg };
        let plan = parsed.runnable_for(&[1, 3, 64, 64])?;
        let out = model::run_f32(&plan, &[1, 3, 64, 64], &[0.5; 3 * 64 * 64]).map_err(|e| err(format!("{e:#}")))?;
        let shapes: Vec<Vec<usize>> = out.iter().map(|o| o.shape().to_vec()).collect();
        let want: Vec<Vec<usize>> = STRIDES.iter().map(|s| vec![1, 5, 64 / *s as usize, 64 / *s as usize]).collect();
        if shapes != want {
            return Err(err(format!("outputs {shapes:?}, mien-face expects {want:?}: is detect.kind right?")));
        }
        Ok(())
    }
}

/// An RGB24 image (`rw` x `rh`) into a planar NCHW input (`iw` x `ih`) in [0, 1], its last column and row repeated
/// into the padding.
fn to_input(rgb: &[u8], rw: u32, rh: u32, iw: u32, ih: u32, input: &mut [f32]) {
    let (rw, rh, iw, ih) = (rw as usize, rh as usize, iw as usize, ih as usize);
    let plane = iw * ih;
    for y in 0..ih {
        let sy = y.min(rh - 1);
        let src = &rgb[sy * rw * 3..(sy + 1) * rw * 3];
        for c in 0..3 {
            let row = &mut input[c * plane + y * iw..c * plane + (y + 1) * iw];
            for (d, p) in row[..rw].iter_mut().zip(src.chunks_exact(3)) {
                *d = p[c] as f32 * (1.0 / 255.0);
            }
            let last = row[rw - 1];
            row[rw..].fill(last);
        }
    }
}

/// One output (1x5xgh x gw at `stride`) to candidates in frame pixels; model pixel (x, y) is frame pixel
/// (x / zx, y / zy).
fn decode(
    out: &[f32],
    (gw, gh): (usize, usize),
    stride: f32,
    (zx, zy): (f32, f32),
    threshold: f32,
    cands: &mut Vec<Detection>,
) -> Result<(), DetectError> {
    let plane = gw * gh;
    if out.len() != 5 * plane {
        return Err(DetectError::Inference(format!("output of {} values for a {gw}x{gh} grid", out.len())));
    }
    let (shrink, down) = TO_FULL_RANGE;
    for (i, &score) in out[..plane].iter().enumerate() {
        // `!(score >= t)` also stops a NaN
        if !(score >= threshold) {
            continue;
        }
        let (cx, cy) = (((i % gw) as f32 + 0.5) * stride, ((i / gw) as f32 + 0.5) * stride);
        let (l, t, r, b) = (out[plane + i], out[2 * plane + i], out[3 * plane + i], out[4 * plane + i]);
        let (x0, y0, x1, y1) = (cx - l, cy - t, cx + r, cy + b);
        let (w, h) = ((x1 - x0) * shrink, (y1 - y0) * shrink);
        let (mx, my) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0 + down * h);
        let bbox = BBox { x0: (mx - w / 2.0) / zx, y0: (my - h / 2.0) / zy, x1: (mx + w / 2.0) / zx, y1: (my + h / 2.0) / zy };
        if bbox.width() > 1.0 && bbox.height() > 1.0 && bbox.x0.is_finite() && bbox.y1.is_finite() {
            cands.push(Detection { bbox, score, roll: f32::NAN, blur_only: false, keypoints: None }); // upright
        }
    }
    Ok(())
}

impl FaceDetector for MienFace {
    fn fork(&self) -> Result<Box<dyn FaceDetector>, ModelError> {
        Ok(Box::new(MienFace { core: self.core.fork()? }))
    }

    fn prepare(&mut self, w: u32, h: u32) -> Result<(), ModelError> {
        let c = &mut self.core;
        let (parsed, min_face, max_face) = (&c.parsed, c.min_face, c.max_face);
        c.levels.get(w, h, || passes(parsed, w, h, min_face, max_face)).map(|_| ())
    }

    fn detect(&mut self, frame: &Frame, out: &mut Detections) -> Result<(), DetectError> {
        let MultiScale { parsed, levels, scaler, candidates, score_threshold, min_face, max_face, nms_iou, .. } = &mut self.core;
        let (w, h) = (frame.width, frame.height);
        let levels = levels.get(w, h, || passes(parsed, w, h, *min_face, *max_face)).map_err(DetectError::inference)?;
        candidates.clear();
        for p in levels.iter_mut() {
            p.fill_input(frame, scaler, to_input)?;
            let shape = p.shape();
            let outputs = model::run_state(&mut p.state, &shape, &p.input).map_err(DetectError::inference)?;
            if outputs.len() != STRIDES.len() {
                return Err(DetectError::Inference(format!("{} outputs, expected {}", outputs.len(), STRIDES.len())));
            }
            for (o, &s) in outputs.iter().zip(&STRIDES) {
                let grid = ((p.iw / s) as usize, (p.ih / s) as usize);
                let v = model::output_f32(o).map_err(DetectError::inference)?;
                decode(v, grid, s as f32, p.zoom(frame), *score_threshold, candidates)?;
            }
        }
        weighted_nms(candidates, *nms_iou, out)
    }

    fn sha256(&self) -> &str {
        &self.core.sha256
    }

    fn describe(&self) -> String {
        let c = &self.core;
        format!("mien-face (faces from {} px) {} sha256:{}", c.min_face, c.name, &c.sha256[..12])
    }

    fn face_range(&self, width: u32, height: u32) -> (f32, f32) {
        let z = pass_scales_up_to(width, height, self.core.min_face, self.core.max_face);
        (MIN_MODEL_FACE / z[0], (MAX_MODEL_FACE / z[z.len() - 1]).min(self.core.max_face))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_cover_min_face_to_the_whole_frame_without_gaps() {
        for (w, h, min_face) in [(640, 480, 16.0), (1920, 1080, 16.0), (640, 480, 40.0), (160, 160, 16.0), (320, 240, 8.0)] {
            let z = pass_scales(w, h, min_face);
            let lo = MIN_MODEL_FACE / z[0];
            assert!(lo <= min_face.max(MIN_MODEL_FACE / MAX_UPSCALE) + 1e-3, "{w}x{h}: {z:?}");
            for k in 1..z.len() {
                assert!(MIN_MODEL_FACE / z[k] < MAX_MODEL_FACE / z[k - 1], "{w}x{h}: gap after pass {k}");
            }
            assert!(MAX_MODEL_FACE / z[z.len() - 1] >= w.max(h) as f32, "{w}x{h}: {z:?}");
        }
    }

    #[test]
    fn decode_reads_distances_from_the_cell_centre() {
        // A 2x2 grid at stride 8; one cell (x 1, y 0) over the threshold, 10 px to each side.
        let mut out = vec![0.0f32; 5 * 4];
        out[1] = 0.9;
        for c in 1..5 {
            out[c * 4 + 1] = 10.0;
        }
        let mut cands = Vec::new();
        decode(&out, (2, 2), 8.0, (0.5, 0.5), 0.5, &mut cands).unwrap();
        assert_eq!(cands.len(), 1);
        let b = cands[0].bbox;
        // centre (12, 4) in the model's input, (24, 8) in the frame (plus the convention's shift down)
        assert!(((b.x0 + b.x1) / 2.0 - 24.0).abs() < 1e-3, "{b:?}");
        assert!((b.width() - 40.0 / 1.134).abs() < 1e-3, "{b:?}");
        assert!((b.y0 + b.y1) / 2.0 > 8.0, "{b:?}");
        // NaN scores never pass; a wrong output size is an error, not a silent empty result
        out[1] = f32::NAN;
        cands.clear();
        decode(&out, (2, 2), 8.0, (1.0, 1.0), 0.5, &mut cands).unwrap();
        assert!(cands.is_empty());
        assert!(decode(&out[..19], (2, 2), 8.0, (1.0, 1.0), 0.5, &mut cands).is_err());
    }

    #[test]
    fn padding_repeats_the_last_row_and_column() {
        let rgb: Vec<u8> = (0..2 * 2 * 3).map(|i| (i * 10) as u8).collect();
        let mut input = vec![0.0; 3 * 4 * 3];
        to_input(&rgb, 2, 2, 4, 3, &mut input);
        let at = |c: usize, y: usize, x: usize| input[c * 12 + y * 4 + x];
        assert_eq!(at(0, 0, 0), 0.0);
        assert_eq!(at(0, 0, 3), at(0, 0, 1));
        assert_eq!(at(2, 2, 3), at(2, 1, 1));
        assert!((at(1, 1, 1) - 100.0 / 255.0).abs() < 1e-6);
    }
}
