//! Replay a directory of images (JPEG, PNG, PGM/PPM) in name order at a fixed rate, for tests, pilots and
//! benchmarks. Frames keep their own size.

use super::{FrameSource, SourceError};
use crate::frame::{now_ms, Frame};
use crate::pixels;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct ReplaySource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
    period: Option<Duration>,
    looping: bool,
    last: Option<Instant>,
    /// Frame timestamps: the first frame's wall-clock time plus one frame period per frame (see `nominal_fps`).
    t0_ms: Option<u64>,
    interval_ms: f64,
    served: u64,
}

const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "pgm", "ppm"];

impl ReplaySource {
    /// `fps` <= 0 plays as fast as frames can be processed.
    pub fn open(dir: &Path, fps: f32, looping: bool) -> Result<Self, SourceError> {
        let rd = std::fs::read_dir(dir).map_err(|e| SourceError::Fatal(format!("source {}: {e}", dir.display())))?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(SourceError::Fatal(format!(
                "source {}: no images ({}) in the directory",
                dir.display(),
                EXTENSIONS.join(", ")
            )));
        }
        let period = (fps > 0.0).then(|| Duration::from_secs_f32(1.0 / fps));
        let interval_ms = if fps > 0.0 { 1000.0 / fps as f64 } else { 1000.0 / 15.0 };
        let (next, last, t0_ms, served) = (0, None, None, 0);
        Ok(ReplaySource { dir: dir.into(), files, next, period, looping, last, t0_ms, interval_ms, served })
    }

    /// The frame rate the recording stands for when it is replayed as fast as the pipeline goes (`replay_fps`
    /// 0): a replayed frame's timestamp is the time it would have had at the camera, the first frame's wall-clock
    /// time plus one period per frame, so time-based stages (label smoothing) see the recording's own timing
    /// whatever the machine's speed. With `replay_fps` set, its period is used.
    pub fn nominal_fps(mut self, fps: f32) -> Self {
        if self.period.is_none() && fps > 0.0 {
            self.interval_ms = 1000.0 / fps as f64;
        }
        self
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FrameSource for ReplaySource {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        if self.next >= self.files.len() {
            if !self.looping {
                return Ok(false);
            }
            self.next = 0;
        }
        if let (Some(p), Some(last)) = (self.period, self.last) {
            let due = last + p;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        self.last = Some(Instant::now());
        let path = &self.files[self.next];
        self.next += 1;
        let k = self.served;
        self.served += 1;
        decode_image(path, frame).map_err(SourceError::Corrupt)?;
        let t0 = *self.t0_ms.get_or_insert_with(now_ms);
        frame.ts_ms = t0 + (k as f64 * self.interval_ms).round() as u64;
        Ok(true)
    }

    fn describe(&self) -> String {
        format!("replay {} ({} images)", self.dir.display(), self.files.len())
    }
}

/// Decode an image file (JPEG, PNG) into `frame`; truncated JPEGs are refused. The error names the file.
pub fn decode_image(path: &Path, frame: &mut Frame) -> Result<(), String> {
    let corrupt = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let bytes = std::fs::read(path).map_err(|e| corrupt(&e))?;
    let format = image::guess_format(&bytes).map_err(|e| corrupt(&e))?;
    if format == image::ImageFormat::Jpeg {
        pixels::check_jpeg_complete(&bytes).map_err(|e| corrupt(&e))?;
    }
    let img = image::load_from_memory_with_format(&bytes, format).map_err(|e| corrupt(&e))?;
    let rgb = img.into_rgb8();
    frame.ensure_size(rgb.width(), rgb.height());
    frame.data.copy_from_slice(rgb.as_raw());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_frames_are_stamped_at_the_recordings_rate() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..3 {
            image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9])).save(d.path().join(format!("f{i}.png"))).unwrap();
        }
        let mut s = ReplaySource::open(d.path(), 0.0, true).unwrap().nominal_fps(10.0);
        let mut f = Frame::new(1, 1);
        let mut ts = Vec::new();
        for _ in 0..5 {
            assert!(s.next_frame(&mut f).unwrap());
            ts.push(f.ts_ms);
        }
        let steps: Vec<u64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(steps, [100, 100, 100, 100], "as fast as it goes, stamped at 10 frames/s, looping included");
        assert!(ts[0] > 1_700_000_000_000, "wall-clock start: {}", ts[0]);
    }

    #[test]
    fn plays_in_name_order_and_refuses_corrupt_images() {
        let d = tempfile::tempdir().unwrap();
        for (i, v) in [(1u8, 10u8), (0, 200)] {
            image::RgbImage::from_pixel(8, 4, image::Rgb([v, v, v])).save(d.path().join(format!("f{i}.png"))).unwrap();
        }
        std::fs::write(d.path().join("f2.jpg"), b"\xff\xd8 truncated").unwrap();
        std::fs::write(d.path().join("notes.txt"), b"ignored").unwrap();
        let mut s = ReplaySource::open(d.path(), 0.0, false).unwrap();
        assert_eq!(s.len(), 3);
        let mut f = Frame::new(1, 1);
        assert!(s.next_frame(&mut f).unwrap());
        assert_eq!((f.width, f.height, f.data[0]), (8, 4, 200));
        assert!(s.next_frame(&mut f).unwrap());
        assert_eq!(f.data[0], 10);
        let e = s.next_frame(&mut f).unwrap_err();
        assert!(matches!(e, SourceError::Corrupt(ref m) if m.contains("f2.jpg")), "{e}");
        assert!(!s.next_frame(&mut f).unwrap());
    }

    #[test]
    fn empty_or_missing_directory_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let e = ReplaySource::open(d.path(), 0.0, false).err().unwrap();
        assert!(e.to_string().contains("no images"), "{e}");
        let e = ReplaySource::open(&d.path().join("nope"), 0.0, false).err().unwrap();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
