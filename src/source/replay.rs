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
        Ok(ReplaySource { dir: dir.into(), files, next: 0, period, looping, last: None })
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
        decode_image(path, frame).map_err(SourceError::Corrupt)?;
        frame.ts_ms = now_ms();
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
