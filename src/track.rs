//! Track ids: a detection keeps the id of the face it overlaps most in recent frames, so labels from one
//! person can be followed over time without anything that identifies them.

use crate::frame::BBox;

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

#[cfg(test)]
mod tests {
    use super::*;

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
