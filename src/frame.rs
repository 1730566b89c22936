//! The frame buffer every stage shares, and the small geometry types that travel with it.

/// One RGB24 frame, tightly packed (stride = 3 * width). Sources write into it, privacy blurs it in place.
/// The buffer is reused from frame to frame: it is only reallocated when the frame size changes.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
    /// Frame number, counted by the pipeline from 0.
    pub seq: u64,
    /// Capture time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
}

impl Frame {
    pub fn new(width: u32, height: u32) -> Self {
        Frame { width, height, data: vec![0; width as usize * height as usize * 3], seq: 0, ts_ms: 0 }
    }

    /// Resize the buffer for a new frame size (no allocation when the size is unchanged).
    pub fn ensure_size(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.data.resize(width as usize * height as usize * 3, 0);
    }

    pub fn stride(&self) -> usize {
        self.width as usize * 3
    }

    pub fn fill(&mut self, rgb: [u8; 3]) {
        for px in self.data.chunks_exact_mut(3) {
            px.copy_from_slice(&rgb);
        }
    }

    pub fn full_rect(&self) -> Rect {
        Rect { x0: 0, y0: 0, x1: self.width, y1: self.height }
    }
}

/// A box in frame pixel coordinates (floating point, may reach outside the frame).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl BBox {
    pub fn width(&self) -> f32 {
        (self.x1 - self.x0).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.y1 - self.y0).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
    pub fn center(&self) -> (f32, f32) {
        ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)
    }

    /// Does `o` lie wholly inside this box (edges included)?
    pub fn contains(&self, o: &BBox) -> bool {
        o.x0 >= self.x0 && o.y0 >= self.y0 && o.x1 <= self.x1 && o.y1 <= self.y1
    }

    /// The share of this box's area that lies inside `o` (0 for an empty box).
    pub fn inside_share(&self, o: &BBox) -> f32 {
        let ix = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0.0);
        let iy = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0.0);
        let a = self.area();
        if a <= 0.0 {
            0.0
        } else {
            ix * iy / a
        }
    }

    pub fn iou(&self, o: &BBox) -> f32 {
        let ix = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0.0);
        let iy = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }

    /// Grow the box by `margin` times its size on every side.
    pub fn expand(&self, margin: f32) -> BBox {
        let (dx, dy) = (self.width() * margin, self.height() * margin);
        BBox { x0: self.x0 - dx, y0: self.y0 - dy, x1: self.x1 + dx, y1: self.y1 + dy }
    }

    /// The smallest integer rectangle covering the box, clipped to a `width` x `height` frame.
    /// Rounds outwards: a blurred region never ends up smaller than the box.
    pub fn to_rect(&self, width: u32, height: u32) -> Option<Rect> {
        let c = |v: f32, max: u32| -> u32 {
            if v.is_nan() {
                0
            } else {
                v.clamp(0.0, max as f32) as u32
            }
        };
        let x0 = c(self.x0.floor(), width);
        let y0 = c(self.y0.floor(), height);
        let x1 = c(self.x1.ceil(), width);
        let y1 = c(self.y1.ceil(), height);
        (x1 > x0 && y1 > y0).then_some(Rect { x0, y0, x1, y1 })
    }
}

/// An integer rectangle inside a frame, `x1`/`y1` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl Rect {
    pub fn width(&self) -> u32 {
        self.x1 - self.x0
    }
    pub fn height(&self) -> u32 {
        self.y1 - self.y0
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        let a = BBox { x0: 0.0, y0: 0.0, x1: 10.0, y1: 10.0 };
        let b = BBox { x0: 20.0, y0: 20.0, x1: 30.0, y1: 30.0 };
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        assert_eq!(a.iou(&b), 0.0);
        let c = BBox { x0: 5.0, y0: 0.0, x1: 15.0, y1: 10.0 };
        assert!((a.iou(&c) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(c.inside_share(&a), 0.5);
        assert_eq!(BBox { x0: 2.0, y0: 2.0, x1: 4.0, y1: 4.0 }.inside_share(&a), 1.0);
        assert_eq!(b.inside_share(&a), 0.0);
        assert_eq!(BBox { x0: 1.0, y0: 1.0, x1: 1.0, y1: 5.0 }.inside_share(&a), 0.0, "an empty box");
    }

    #[test]
    fn rect_rounds_outwards_and_clips() {
        let b = BBox { x0: -3.5, y0: 2.2, x1: 10.1, y1: 500.0 };
        assert_eq!(b.to_rect(100, 100), Some(Rect { x0: 0, y0: 2, x1: 11, y1: 100 }));
        let outside = BBox { x0: 200.0, y0: 0.0, x1: 210.0, y1: 10.0 };
        assert_eq!(outside.to_rect(100, 100), None);
    }
}
