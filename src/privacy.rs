//! Privacy: faces are blurred in the frame buffer itself, and the frame is masked whole when detection
//! cannot be trusted. Fail-closed: the only way to a `Protected` frame is through `PrivacyGuard::protect`.

use crate::detect::{DetectError, Detection};
use crate::frame::{BBox, Frame};
use crate::pixels;
use serde::{Deserialize, Serialize};

pub use crate::vocab::PrivacyState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlurMode {
    /// Coarse blocks of the mean colour (default): irreversible.
    Mosaic,
    /// Repeated stack blur with a radius scaled to the face.
    Gaussian,
    /// A solid fill.
    Fill,
}

impl std::str::FromStr for BlurMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mosaic" => Ok(BlurMode::Mosaic),
            "gaussian" => Ok(BlurMode::Gaussian),
            "fill" => Ok(BlurMode::Fill),
            _ => Err(format!("unknown blur mode {s:?} (mosaic, gaussian or fill)")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    pub mode: BlurMode,
    /// Extra margin around each face box, as a fraction of the box size on every side.
    pub margin: f32,
    /// Mosaic: number of cells across the (expanded) face box. Lower is coarser.
    pub mosaic_cells: u32,
    /// Frames a face stays masked after the detector last saw it.
    pub hold_frames: u32,
    /// Colour of solid fills and of whole-frame masks.
    pub fill_rgb: [u8; 3],
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig { mode: BlurMode::Mosaic, margin: 0.4, mosaic_cells: 4, hold_frames: 5, fill_rgb: [96, 96, 96] }
    }
}

impl PrivacyConfig {
    /// Check ranges; the first bad value is reported with its field name.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let p = self;
        if !(p.margin >= 0.0 && p.margin <= 2.0) {
            return Err(("privacy.margin", format!("{} is outside 0..=2", p.margin)));
        }
        if !(2..=16).contains(&p.mosaic_cells) {
            return Err((
                "privacy.mosaic_cells",
                format!("{} is outside 2..=16 (more cells would leave a face recognisable)", p.mosaic_cells),
            ));
        }
        if p.hold_frames > 300 {
            return Err(("privacy.hold_frames", format!("{} is over 300", p.hold_frames)));
        }
        Ok(())
    }
}


/// A frame after privacy has run on it. Savers, displays and anything else that shows pixels take this type,
/// so they cannot be handed a frame that privacy has not seen.
pub struct Protected<'a> {
    frame: &'a Frame,
    state: PrivacyState,
}

impl<'a> Protected<'a> {
    pub fn frame(&self) -> &Frame {
        self.frame
    }
    pub fn state(&self) -> PrivacyState {
        self.state
    }
}

pub struct PrivacyGuard {
    cfg: PrivacyConfig,
    /// Faces seen recently, with the frames they stay masked for.
    held: Vec<(BBox, u32)>,
}

impl PrivacyGuard {
    pub fn new(cfg: PrivacyConfig) -> Self {
        PrivacyGuard { cfg, held: Vec::with_capacity(crate::detect::MAX_FACES * 2) }
    }

    pub fn config(&self) -> &PrivacyConfig {
        &self.cfg
    }

    /// Blur every detected face (and every face held from recent frames) in place, or mask the whole frame
    /// when `detections` is an error. Returns the frame as `Protected`.
    pub fn protect<'a>(
        &mut self,
        frame: &'a mut Frame,
        detections: Result<&[Detection], &DetectError>,
    ) -> Protected<'a> {
        let dets = match detections {
            Ok(d) => d,
            Err(_) => {
                self.mask_whole(frame);
                return Protected { frame, state: PrivacyState::MaskedWhole };
            }
        };
        // Age the held faces; a current detection that overlaps one renews it.
        let hold = self.cfg.hold_frames;
        for h in self.held.iter_mut() {
            h.1 = h.1.saturating_sub(1);
        }
        self.held.retain(|h| h.1 > 0 && !dets.iter().any(|d| d.bbox.iou(&h.0) > 0.3));
        let mut regions = 0;
        for d in dets {
            if self.blur_box(frame, &d.bbox).is_err() {
                self.mask_whole(frame);
                return Protected { frame, state: PrivacyState::MaskedWhole };
            }
            regions += 1;
        }
        for i in 0..self.held.len() {
            let b = self.held[i].0;
            if self.blur_box(frame, &b).is_err() {
                self.mask_whole(frame);
                return Protected { frame, state: PrivacyState::MaskedWhole };
            }
            regions += 1;
        }
        if hold > 0 {
            self.held.extend(dets.iter().map(|d| (d.bbox, hold)));
        }
        Protected { frame, state: PrivacyState::Ok { regions } }
    }

    /// Mask the whole frame (no detection to trust). Exposed for sources that must drop a frame's content.
    pub fn mask_whole(&self, frame: &mut Frame) {
        frame.fill(self.cfg.fill_rgb);
    }

    fn blur_box(&self, frame: &mut Frame, b: &BBox) -> Result<(), pixels::PixelError> {
        let Some(rect) = b.expand(self.cfg.margin).to_rect(frame.width, frame.height) else {
            return Ok(());
        };
        let side = rect.width().max(rect.height());
        match self.cfg.mode {
            BlurMode::Mosaic => {
                let cell = side.div_ceil(self.cfg.mosaic_cells.max(1)).max(4);
                pixels::mosaic(frame, rect, cell);
                // Then the cells' edges are softened (one stack-blur pass of half a cell): hard edges are all the
                // structure a mosaic leaves, and on a face a few cells wide they follow its outline.
                pixels::blur(frame, rect, (cell / 2).max(2), 1)
            }
            BlurMode::Gaussian => pixels::blur(frame, rect, (side / 6).max(3), 3),
            BlurMode::Fill => {
                pixels::fill(frame, rect, self.cfg.fill_rgb);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(w: u32, h: u32) -> Frame {
        let mut f = Frame::new(w, h);
        let mut s = 7u32;
        for v in f.data.iter_mut() {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            *v = (s >> 24) as u8;
        }
        f
    }

    fn face(x: f32) -> Detection {
        Detection::new(BBox { x0: x, y0: 20.0, x1: x + 40.0, y1: 60.0 }, 0.9)
    }

    #[test]
    fn detector_error_masks_the_whole_frame() {
        let mut g = PrivacyGuard::new(PrivacyConfig::default());
        let mut f = noisy(64, 48);
        let err = DetectError::Inference("boom".into());
        let p = g.protect(&mut f, Err(&err));
        assert_eq!(p.state(), PrivacyState::MaskedWhole);
        assert!(f.data.chunks_exact(3).all(|px| px == [96, 96, 96]));
    }

    #[test]
    fn faces_are_held_for_hold_frames_after_they_vanish() {
        let cfg = PrivacyConfig { hold_frames: 3, mode: BlurMode::Fill, margin: 0.0, ..Default::default() };
        let mut g = PrivacyGuard::new(cfg);
        let filled = |f: &Frame| f.data[(30 * 128 + 30) * 3..][..3] == [96, 96, 96];
        let mut f = noisy(128, 96);
        g.protect(&mut f, Ok(&[face(20.0)]));
        assert!(filled(&f));
        // the detector loses the face: it stays masked for the next 2 frames, then is released
        for i in 0..2 {
            let mut f = noisy(128, 96);
            let p = g.protect(&mut f, Ok(&[]));
            assert_eq!(p.state(), PrivacyState::Ok { regions: 1 });
            assert!(filled(&f), "frame {i} after loss leaked the face");
        }
        let mut f = noisy(128, 96);
        g.protect(&mut f, Ok(&[]));
        assert!(!filled(&f));
    }

    #[test]
    fn every_mode_changes_the_face_and_only_near_it() {
        for mode in [BlurMode::Mosaic, BlurMode::Gaussian, BlurMode::Fill] {
            let mut g = PrivacyGuard::new(PrivacyConfig { mode, ..Default::default() });
            let mut f = noisy(160, 120);
            let before = f.clone();
            g.protect(&mut f, Ok(&[face(40.0)]));
            let r = face(40.0).bbox.to_rect(160, 120).unwrap();
            assert!(pixels::detail(&f, r) < pixels::detail(&before, r) / 3.0, "{mode:?}");
            // far corner untouched
            assert_eq!(f.data[..3 * 20], before.data[..3 * 20], "{mode:?}");
        }
    }
}
