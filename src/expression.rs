//! Expression: an `ExpressionClassifier` trait over face crops, with the 8 FER+ classes as its vocabulary.
//!
//! Crops are cut from the frame *before* privacy blurs it, live only in this process's memory (buffers sized
//! once at start and overwritten every frame), and are never written, logged or sent.

use crate::frame::{BBox, Frame, Rect};
use crate::model::{self, ModelError, Runnable};
use crate::pixels::Scaler;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The 8 FER+ expression classes, in FER+ order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Emotion {
    Neutral,
    Happiness,
    Surprise,
    Sadness,
    Anger,
    Disgust,
    Fear,
    Contempt,
}

impl Emotion {
    pub const ALL: [Emotion; 8] = [
        Emotion::Neutral,
        Emotion::Happiness,
        Emotion::Surprise,
        Emotion::Sadness,
        Emotion::Anger,
        Emotion::Disgust,
        Emotion::Fear,
        Emotion::Contempt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Emotion::Neutral => "neutral",
            Emotion::Happiness => "happiness",
            Emotion::Surprise => "surprise",
            Emotion::Sadness => "sadness",
            Emotion::Anger => "anger",
            Emotion::Disgust => "disgust",
            Emotion::Fear => "fear",
            Emotion::Contempt => "contempt",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Emotion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Emotion::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown expression {s:?} (one of the 8 FER+ classes)"))
    }
}

/// A classifier's answer for one face: the top class and its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expression {
    pub label: Emotion,
    pub confidence: f32,
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
}

impl CropSet {
    pub fn new(slots: usize, width: u32, height: u32) -> Self {
        let crops = (0..slots).map(|_| FaceCrop { width, height, rgb: vec![0; (width * height * 3) as usize] }).collect();
        CropSet { crops, len: 0, scaler: Scaler::default() }
    }

    /// Cut one crop per face from the (not yet blurred) frame. Faces beyond the slot count, or whose crop box
    /// is smaller than `min_side` pixels, get `None`.
    pub fn extract<'a>(
        &mut self,
        frame: &Frame,
        boxes: impl Iterator<Item = &'a BBox>,
        crop_box: impl Fn(&BBox) -> BBox,
        min_side: u32,
        slots_out: &mut Vec<Option<usize>>,
    ) -> Result<(), crate::pixels::PixelError> {
        self.len = 0;
        slots_out.clear();
        for b in boxes {
            let r: Option<Rect> = crop_box(b).to_rect(frame.width, frame.height);
            match r {
                Some(r) if r.width().min(r.height()) >= min_side && self.len < self.crops.len() => {
                    let c = &mut self.crops[self.len];
                    self.scaler.crop_resize(frame, r, &mut c.rgb, c.width, c.height)?;
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
        self.len = 0;
    }
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
        let s = Self::SIZE as usize;
        let (model, sha256) = model::load_f32(path, &[1, s, s, 3])?;
        Ok(FaceApiExpression {
            model,
            sha256,
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            input: vec![0.0; s * s * 3],
        })
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
    Expression { label: classes[i], confidence: p }
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
    fn top_class_maps_faceapi_order() {
        let e = top_class(&[0.1, 0.0, 0.0, 0.0, 0.7, 0.1, 0.1], &FACEAPI_CLASSES);
        assert_eq!(e.label, Emotion::Fear);
        assert!((e.confidence - 0.7).abs() < 1e-6);
    }
}
