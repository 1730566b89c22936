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

/// Decode an image file (JPEG, PNG, PGM/PPM) into `frame`; truncated JPEGs are refused. The error names the file.
pub fn decode_image(path: &Path, frame: &mut Frame) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    decode_image_bytes(&bytes, frame).map_err(|e| format!("{}: {e}", path.display()))
}

/// The largest replayed image side, and the most a decoder may allocate: a hostile or broken file that claims
/// more is refused before any allocation.
pub const MAX_IMAGE_SIDE: u32 = 8192;
const MAX_DECODE_ALLOC: u64 = 256 << 20;

/// Decode an image (JPEG, PNG, PGM/PPM, told apart by their bytes) into `frame`.
pub fn decode_image_bytes(bytes: &[u8], frame: &mut Frame) -> Result<(), String> {
    decode_as(bytes, image::guess_format(bytes).map_err(|e| e.to_string())?, frame)
}

/// Decode `bytes` as `format` into `frame` (a camera's MJPEG buffer is decoded as JPEG whatever it holds); a
/// truncated JPEG is refused, and the size and allocation limits apply.
pub fn decode_as(bytes: &[u8], format: image::ImageFormat, frame: &mut Frame) -> Result<(), String> {
    if format == image::ImageFormat::Jpeg {
        pixels::check_jpeg_complete(bytes).map_err(|e| e.to_string())?;
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let rgb = reader.decode().map_err(|e| e.to_string())?.into_rgb8();
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(format!("an empty image ({}x{})", rgb.width(), rgb.height()));
    }
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

    #[test]
    fn pgm_and_ppm_frames_replay_and_oversized_images_are_refused_before_allocating() {
        let d = tempfile::tempdir().unwrap();
        let mut pgm = b"P5\n3 2\n255\n".to_vec();
        pgm.extend([0, 50, 100, 150, 200, 250]);
        std::fs::write(d.path().join("a.pgm"), &pgm).unwrap();
        std::fs::write(d.path().join("b.ppm"), b"P3\n1 1\n255\n10 20 30\n").unwrap();
        let mut s = ReplaySource::open(d.path(), 0.0, false).unwrap();
        let mut f = Frame::new(1, 1);
        assert!(s.next_frame(&mut f).unwrap());
        assert_eq!((f.width, f.height), (3, 2));
        assert_eq!(&f.data[3..6], &[50, 50, 50], "grey becomes RGB");
        assert!(s.next_frame(&mut f).unwrap());
        assert_eq!(&f.data[..], &[10, 20, 30]);
        // A header that claims a frame far beyond any camera: refused, not a 40 GB allocation.
        let e = decode_image_bytes(b"P5\n120000 120000\n255\n\0\0", &mut f).unwrap_err();
        assert!(e.to_lowercase().contains("limit"), "{e}");
    }
}
