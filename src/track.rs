//! Track ids: a detection keeps the id of the face it overlaps most in recent frames, so labels from one
//! person can be followed over time without anything that identifies them.

use crate::frame::BBox;
use crate::vocab::Emotion;

pub struct Tracker {
    tracks: Vec<Track>,
    next_id: u32,
    max_missed: u32,
    min_iou: f32,
}

struct Track {
    id: u32,
    bbox: BBox,
    missed: u32,
    seen: bool,
}

impl Tracker {
    pub fn new(max_missed: u32) -> Self {
        Tracker { tracks: Vec::with_capacity(64), next_id: 0, max_missed, min_iou: 0.3 }
    }

    /// Give each box a track id (written to `ids`, same order as `boxes`).
    pub fn update<'a>(&mut self, boxes: impl Iterator<Item = &'a BBox>, ids: &mut Vec<u32>) {
        ids.clear();
        for t in &mut self.tracks {
            t.seen = false;
        }
        for b in boxes {
            let best = self
                .tracks
                .iter_mut()
                .filter(|t| !t.seen)
                .map(|t| (t.bbox.iou(b), t))
                .filter(|(iou, _)| *iou >= self.min_iou)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((_, t)) => {
                    t.bbox = *b;
                    t.missed = 0;
                    t.seen = true;
                    ids.push(t.id);
                }
                None => {
                    let id = self.next_id;
                    self.next_id = self.next_id.wrapping_add(1);
                    self.tracks.push(Track { id, bbox: *b, missed: 0, seen: true });
                    ids.push(id);
                }
            }
        }
        let max = self.max_missed;
        for t in &mut self.tracks {
            if !t.seen {
                t.missed += 1;
            }
        }
        self.tracks.retain(|t| t.missed <= max);
    }
}

/// Per-track smoothing of the class probabilities (`expression.smoothing_ms`): an exponential moving average over
/// capture time with time constant `window_ms`, so that a track's label changes when its face does, not with each
/// frame's noise. A face seen again after `window_ms * 8` starts afresh. `window_ms` 0 is off: every label is the
/// frame's own.
pub struct LabelSmoother {
    window_ms: u32,
    tracks: Vec<Smoothed>,
}

struct Smoothed {
    track: u32,
    ts_ms: u64,
    probs: [f32; 8],
}

/// Tracks kept at most (the oldest is forgotten first); more than the faces one frame can hold.
const MAX_SMOOTHED: usize = 256;

impl LabelSmoother {
    pub fn new(window_ms: u32) -> Self {
        LabelSmoother { window_ms, tracks: Vec::new() }
    }

    /// The label and confidence to send for `track`'s face at `ts_ms`, given this frame's own label and its
    /// probabilities (off, or a face without a track: the frame's own).
    pub fn smooth(&mut self, track: u32, ts_ms: u64, own: (Emotion, f32), probs: &[f32; 8]) -> (Emotion, f32) {
        if self.window_ms == 0 || track == u32::MAX {
            return own;
        }
        let tau = self.window_ms as f64;
        let stale = |s: &Smoothed| ts_ms.saturating_sub(s.ts_ms) as f64 > 8.0 * tau;
        let i = match self.tracks.iter().position(|s| s.track == track) {
            Some(i) if !stale(&self.tracks[i]) => {
                let s = &mut self.tracks[i];
                let a = (-(ts_ms.saturating_sub(s.ts_ms) as f64) / tau).exp() as f32;
                for (m, &p) in s.probs.iter_mut().zip(probs) {
                    *m = a * *m + (1.0 - a) * p;
                }
                s.ts_ms = ts_ms;
                i
            }
            Some(i) => {
                self.tracks[i] = Smoothed { track, ts_ms, probs: *probs };
                i
            }
            None => {
                self.tracks.retain(|s| !stale(s));
                if self.tracks.len() >= MAX_SMOOTHED {
                    let oldest = (0..self.tracks.len()).min_by_key(|&i| self.tracks[i].ts_ms).expect("not empty");
                    self.tracks.swap_remove(oldest);
                }
                self.tracks.push(Smoothed { track, ts_ms, probs: *probs });
                self.tracks.len() - 1
            }
        };
        Emotion::top(&self.tracks[i].probs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smooth(s: &mut LabelSmoother, track: u32, ts: u64, p: &[f32; 8]) -> (Emotion, f32) {
        s.smooth(track, ts, Emotion::top(p), p)
    }

    fn one_hot(e: Emotion, p: f32) -> [f32; 8] {
        let mut v = [(1.0 - p) / 7.0; 8];
        v[e.index()] = p;
        v
    }

    #[test]
    fn smoothing_off_gives_each_frames_label() {
        let mut s = LabelSmoother::new(0);
        assert_eq!(smooth(&mut s, 1, 0, &one_hot(Emotion::Happiness, 0.9)), (Emotion::Happiness, 0.9));
        assert_eq!(smooth(&mut s, 1, 66, &one_hot(Emotion::Fear, 0.6)), (Emotion::Fear, 0.6));
    }

    #[test]
    fn one_odd_frame_does_not_flip_the_label_and_a_lasting_change_does() {
        let mut s = LabelSmoother::new(500);
        let mut ts = 0;
        for _ in 0..30 {
            ts += 66;
            assert_eq!(smooth(&mut s, 7, ts, &one_hot(Emotion::Neutral, 0.8)).0, Emotion::Neutral);
        }
        ts += 66;
        assert_eq!(smooth(&mut s, 7, ts, &one_hot(Emotion::Surprise, 0.9)).0, Emotion::Neutral, "one frame of noise");
        // A real change shows within about the window: the label flips after a few hundred ms, not at once.
        let mut flipped_after = None;
        for k in 1..40 {
            ts += 66;
            if smooth(&mut s, 7, ts, &one_hot(Emotion::Happiness, 0.9)).0 == Emotion::Happiness {
                flipped_after = Some(k);
                break;
            }
        }
        let k = flipped_after.expect("a lasting change shows");
        assert!((3..=10).contains(&k), "flipped after {k} frames");
        // Another track is smoothed on its own.
        assert_eq!(smooth(&mut s, 8, ts, &one_hot(Emotion::Anger, 0.7)), (Emotion::Anger, 0.7));
        // A face back after a long absence starts afresh.
        assert_eq!(smooth(&mut s, 7, ts + 60_000, &one_hot(Emotion::Sadness, 0.6)), (Emotion::Sadness, 0.6));
    }

    #[test]
    fn ids_follow_overlapping_boxes() {
        let b = |x: f32| BBox { x0: x, y0: 0.0, x1: x + 20.0, y1: 20.0 };
        let mut t = Tracker::new(2);
        let mut ids = Vec::new();
        t.update([b(0.0), b(100.0)].iter(), &mut ids);
        assert_eq!(ids, [0, 1]);
        t.update([b(102.0), b(3.0)].iter(), &mut ids);
        assert_eq!(ids, [1, 0]);
        for _ in 0..3 {
            t.update([].iter(), &mut ids);
        }
        t.update([b(3.0)].iter(), &mut ids);
        assert_eq!(ids, [2], "a track lost for longer than max_missed gets a new id");
    }
}
