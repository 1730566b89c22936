//! Frame sources: a V4L2 camera or a replayed directory of images, behind one trait.

pub mod replay;
pub mod v4l2;
pub mod v4l2io;

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
        // NV12M and YUV420M laid end to end are NV12 and YU12.
        PixelFormat::Nv12 | PixelFormat::Yu12 | PixelFormat::Nv12m | PixelFormat::Yu12m => {
            frame.ensure_size(width, height);
            let nv12 = matches!(fmt, PixelFormat::Nv12 | PixelFormat::Nv12m);
            pixels::yuv420_to_rgb(data, stride.max(w), nv12, frame)
        }
        PixelFormat::Mjpeg => replay::decode_as(data, image::ImageFormat::Jpeg, frame)
            .map_err(|e| PixelError::Convert(format!("MJPEG: {e}"))),
    }
}

/// A multi-planar buffer (`(bytes, bytes per line)` per plane, as the driver reported them) into `frame`.
/// NV12M and YUV420M come in 2 and 3 planes; every other format in one, which goes through [`convert`].
pub fn convert_planes(
    fmt: PixelFormat,
    planes: &[(&[u8], usize)],
    width: u32,
    height: u32,
    frame: &mut Frame,
) -> Result<(), crate::pixels::PixelError> {
    use crate::pixels::{self, PixelError};
    let want = fmt.planes();
    if planes.len() != want {
        let (f, n) = (fmt.name(), planes.len());
        return Err(PixelError::Convert(format!("{f} comes in {want} plane(s), the buffer has {n}")));
    }
    match fmt {
        PixelFormat::Nv12m | PixelFormat::Yu12m => {
            frame.ensure_size(width, height);
            pixels::yuv420_planes_to_rgb(planes, frame)
        }
        _ => convert(fmt, planes[0].0, width, height, planes[0].1, frame),
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
    /// NV12 with the Y and UV planes in separate buffers (V4L2_PIX_FMT_NV12M; multi-planar devices only).
    #[serde(rename = "NM12")]
    Nv12m,
    /// 4:2:0, Y then U then V (V4L2_PIX_FMT_YUV420; UVC and ISP devices).
    #[serde(rename = "YU12")]
    Yu12,
    /// YU12 with Y, U and V in three buffers (V4L2_PIX_FMT_YUV420M; multi-planar devices only).
    #[serde(rename = "YM12")]
    Yu12m,
    #[serde(rename = "GREY")]
    Grey,
    #[serde(rename = "MJPG")]
    Mjpeg,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 8] = [
        PixelFormat::Yuyv,
        PixelFormat::Rgb24,
        PixelFormat::Nv12,
        PixelFormat::Nv12m,
        PixelFormat::Yu12,
        PixelFormat::Yu12m,
        PixelFormat::Grey,
        PixelFormat::Mjpeg,
    ];

    pub fn fourcc(self) -> [u8; 4] {
        self.name().as_bytes().try_into().expect("fourccs are 4 bytes")
    }

    pub fn from_fourcc(f: &[u8; 4]) -> Option<Self> {
        Self::ALL.into_iter().find(|p| &p.fourcc() == f)
    }

    /// Buffers (memory planes) per frame on a multi-planar device.
    pub fn planes(self) -> usize {
        match self {
            PixelFormat::Nv12m => 2,
            PixelFormat::Yu12m => 3,
            _ => 1,
        }
    }

    /// The same pixels in the other memory layout (NV12 <-> NM12, YU12 <-> YM12): a camera offering only one of
    /// the two still serves a profile that names the other.
    pub fn twin(self) -> Option<Self> {
        match self {
            PixelFormat::Nv12 => Some(PixelFormat::Nv12m),
            PixelFormat::Nv12m => Some(PixelFormat::Nv12),
            PixelFormat::Yu12 => Some(PixelFormat::Yu12m),
            PixelFormat::Yu12m => Some(PixelFormat::Yu12),
            _ => None,
        }
    }

    /// The fourcc as text, as V4L2 tools print it.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Rgb24 => "RGB3",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Yu12 => "YU12",
            PixelFormat::Nv12m => "NM12",
            PixelFormat::Yu12m => "YM12",
            PixelFormat::Grey => "GREY",
            PixelFormat::Mjpeg => "MJPG",
        }
    }

    /// The names mien reads, for messages.
    pub fn names() -> String {
        Self::ALL.map(PixelFormat::name).join(", ")
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
        Err(format!("unknown pixel format {s:?} (one of {})", Self::names()))
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
