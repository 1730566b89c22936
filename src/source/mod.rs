//! Frame sources: a V4L2 camera or a replayed directory of images, behind one trait.

pub mod replay;
pub mod v4l2;

use crate::frame::Frame;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The device or directory cannot be used at all (missing, busy, no usable format): give up.
    #[error("{0}")]
    Fatal(String),
    /// The camera went away or failed; the source reconnects on a later call.
    #[error("camera unavailable: {0}")]
    Unavailable(String),
    /// One frame was unusable (truncated buffer, undecodable image); the next one may be fine.
    #[error("corrupt frame: {0}")]
    Corrupt(String),
}

pub trait FrameSource: Send {
    /// Fill `frame` with the next frame. `Ok(false)` means the source has ended (replay only).
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError>;
    fn describe(&self) -> String;
    /// Times the source came back after being lost (cameras).
    fn reconnects(&self) -> u64 {
        0
    }
}

/// One captured buffer of `fmt` (`width` x `height`, `stride` bytes per line as the driver reports it, 0 when it
/// does not) into `frame` as RGB. A buffer too short for its size, or a JPEG that is cut off or broken, is an
/// error (the frame is then dropped unseen); the bytes are never trusted beyond their length.
pub fn convert(
    fmt: PixelFormat,
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    frame: &mut Frame,
) -> Result<(), crate::pixels::PixelError> {
    use crate::pixels::{self, PixelError};
    let w = width as usize;
    match fmt {
        PixelFormat::Yuyv => {
            frame.ensure_size(width, height);
            pixels::yuyv_to_rgb(data, stride.max(w * 2), frame)
        }
        PixelFormat::Grey => {
            frame.ensure_size(width, height);
            pixels::grey_to_rgb(data, stride.max(w), frame)
        }
        PixelFormat::Rgb24 => {
            frame.ensure_size(width, height);
            pixels::rgb_to_rgb(data, stride.max(w * 3), frame)
        }
        PixelFormat::Nv12 | PixelFormat::Yu12 => {
            frame.ensure_size(width, height);
            pixels::yuv420_to_rgb(data, stride.max(w), fmt == PixelFormat::Nv12, frame)
        }
        PixelFormat::Mjpeg => replay::decode_as(data, image::ImageFormat::Jpeg, frame)
            .map_err(|e| PixelError::Convert(format!("MJPEG: {e}"))),
    }
}

/// Pixel formats mien negotiates, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PixelFormat {
    #[serde(rename = "YUYV")]
    Yuyv,
    #[serde(rename = "RGB3")]
    Rgb24,
    /// 4:2:0, Y then interleaved UV (common on MPLANE and ISP devices, e.g. the Pi's camera pipeline).
    #[serde(rename = "NV12")]
    Nv12,
    /// 4:2:0, Y then U then V (V4L2_PIX_FMT_YUV420; UVC and ISP devices).
    #[serde(rename = "YU12")]
    Yu12,
    #[serde(rename = "GREY")]
    Grey,
    #[serde(rename = "MJPG")]
    Mjpeg,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 6] = [
        PixelFormat::Yuyv,
        PixelFormat::Rgb24,
        PixelFormat::Nv12,
        PixelFormat::Yu12,
        PixelFormat::Grey,
        PixelFormat::Mjpeg,
    ];

    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Rgb24 => *b"RGB3",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Yu12 => *b"YU12",
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Mjpeg => *b"MJPG",
        }
    }

    pub fn from_fourcc(f: &[u8; 4]) -> Option<Self> {
        Self::ALL.into_iter().find(|p| &p.fourcc() == f)
    }
}

impl std::str::FromStr for PixelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if b.len() == 4 {
            if let Some(p) = Self::from_fourcc(&[b[0], b[1], b[2], b[3]]) {
                return Ok(p);
            }
        }
        Err(format!("unknown pixel format {s:?} (YUYV, RGB3, NV12, YU12, GREY or MJPG)"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// `/dev/videoN` or a directory of images to replay.
    pub source: String,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub fps: f32,
    /// MMAP buffers to queue.
    pub buffers: u32,
    /// Longest wait for a frame before the camera is treated as lost.
    pub timeout_ms: u32,
    /// Replay rate for directories (0 = as fast as the pipeline goes).
    pub replay_fps: f32,
    /// Replay the directory again and again.
    pub replay_loop: bool,
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            source: "/dev/video0".into(),
            width: 640,
            height: 480,
            format: PixelFormat::Yuyv,
            fps: 15.0,
            buffers: 4,
            timeout_ms: 2000,
            replay_fps: 0.0,
            replay_loop: false,
        }
    }
}

impl CameraConfig {
    /// Check ranges; the first bad value is reported with its field name.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let c = self;
        if c.source.is_empty() {
            return Err(("camera.source", "must name /dev/videoN or a directory of images".into()));
        }
        if !(16..=8192).contains(&c.width) {
            return Err(("camera.width", format!("{} is outside 16..=8192", c.width)));
        }
        if !(16..=8192).contains(&c.height) {
            return Err(("camera.height", format!("{} is outside 16..=8192", c.height)));
        }
        if !(c.fps >= 0.0 && c.fps <= 240.0) {
            return Err(("camera.fps", format!("{} is outside 0..=240", c.fps)));
        }
        if !(2..=32).contains(&c.buffers) {
            return Err(("camera.buffers", format!("{} is outside 2..=32", c.buffers)));
        }
        if !(50..=60_000).contains(&c.timeout_ms) {
            return Err(("camera.timeout_ms", format!("{} is outside 50..=60000", c.timeout_ms)));
        }
        if !(c.replay_fps >= 0.0 && c.replay_fps <= 1000.0) {
            return Err(("camera.replay_fps", format!("{} is outside 0..=1000", c.replay_fps)));
        }
        Ok(())
    }
}

/// Open `--source`: a path under /dev is a V4L2 device, a directory is replayed.
pub fn open(
    spec: &str,
    cam: &CameraConfig,
    replay_fps: f32,
    replay_loop: bool,
) -> Result<Box<dyn FrameSource>, SourceError> {
    let p = std::path::Path::new(spec);
    if spec.starts_with("/dev/") {
        Ok(Box::new(v4l2::V4l2Source::open(spec, cam)?))
    } else if p.is_dir() {
        Ok(Box::new(replay::ReplaySource::open(p, replay_fps, replay_loop)?.nominal_fps(cam.fps)))
    } else if p.exists() {
        Err(SourceError::Fatal(format!(
            "source {spec}: not a directory of images nor a /dev/video device"
        )))
    } else {
        Err(SourceError::Fatal(format!("source {spec}: no such device or directory")))
    }
}
