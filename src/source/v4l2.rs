//! V4L2 capture: format negotiation, MMAP streaming with several buffers, poll with a timeout before each
//! dequeue, and reconnection with backoff when the camera disappears. A camera that comes back under another
//! node (re-plugged while its old node was still held open, so the kernel gave it the next free number) is found
//! again by its card name and bus. Single-planar devices (UVC, most USB cameras, libcamerify) and multi-planar
//! ones (SoC camera pipelines, ISPs) alike; the calls themselves are in [`super::v4l2io`].

use super::v4l2io;
use super::{CameraConfig, FrameSource, PixelFormat, SourceError};
use crate::frame::{now_ms, Frame};
use std::time::{Duration, Instant};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
// Retries stay cheap (a failed open and a scan of /dev), so a camera that comes back is picked up within about
// half a second.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
const V4L2_BUF_FLAG_ERROR: u32 = 0x40;

struct Open {
    // The stream holds the device open (and unmaps, STREAMOFFs and frees its buffers on drop).
    stream: v4l2io::Stream,
    multi: bool,
    format: PixelFormat,
    width: u32,
    height: u32,
    /// Bytes per line of each plane, as the driver set them.
    strides: Vec<usize>,
    id: Identity,
}

/// Which camera a node is: V4L2's card name and bus_info (e.g. "usb-0000:01:00.0-1.2"), stable across re-plugs
/// into the same port.
#[derive(Clone, Debug, PartialEq)]
struct Identity {
    card: String,
    bus: String,
}

pub struct V4l2Source {
    path: String,
    cam: CameraConfig,
    open: Option<Open>,
    backoff: Duration,
    next_try: Instant,
    reconnects: u64,
    id: Identity,
    /// The last failure logged at warn level and when: a camera away for hours logs a line a minute, not two a second.
    said: Option<(String, Instant)>,
}

const REPEAT_LOG: Duration = Duration::from_secs(60);

fn describe_io(path: &str, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => format!("{path}: no such device (is the camera connected and its driver loaded?)"),
        Some(libc::EBUSY) => format!("{path}: device busy (another program is using the camera)"),
        Some(libc::EACCES) | Some(libc::EPERM) => format!("{path}: permission denied (is the user in group video?)"),
        Some(libc::ENODEV) => format!("{path}: device gone (unplugged?)"),
        _ => format!("{path}: {e}"),
    }
}

/// What the device is and which pixel formats it offers (for `mien doctor`).
pub fn probe(path: &str) -> Result<String, String> {
    let dev = v4l2io::open(path).map_err(|e| describe_io(path, &e))?;
    let caps = v4l2io::query_caps(&dev).map_err(|e| describe_io(path, &e))?;
    let q = caps.capture().ok_or_else(|| format!("{path}: {} ({}) is not a video capture device", caps.card, caps.driver))?;
    let fourccs = v4l2io::enum_formats(&dev, q).map_err(|e| describe_io(path, &e))?;
    if !fourccs.iter().any(|f| PixelFormat::from_fourcc(f).is_some()) {
        return Err(none_readable(path, &caps, &fourccs));
    }
    let api = if q.multi { ", multi-planar" } else { "" };
    Ok(format!("{} ({}{api}), formats {}", caps.card, caps.driver, fourcc_list(&fourccs)))
}

/// Fourccs as V4L2 tools print them, space-separated (codes that are not text are left out).
fn fourcc_list(fourccs: &[[u8; 4]]) -> String {
    let names: Vec<String> = fourccs
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_string())
        .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_graphic()))
        .collect();
    if names.is_empty() { "no formats".into() } else { names.join(" ") }
}

/// A camera that offers nothing mien reads: what it offers, and the way on for a Pi camera module.
fn none_readable(path: &str, caps: &v4l2io::Caps, fourccs: &[[u8; 4]]) -> String {
    let (card, driver, hint) = (&caps.card, &caps.driver, libcamera_hint(&caps.driver));
    let (has, reads) = (fourcc_list(fourccs), PixelFormat::names());
    format!("{path}: {card} ({driver}) offers {has}, none of the formats mien reads ({reads}){hint}")
}

/// The profile's format if offered, else the same pixels in the other memory layout (NV12 <-> NM12,
/// YU12 <-> YM12), else the first format mien reads that the camera offers.
fn choose(path: &str, caps: &v4l2io::Caps, fourccs: &[[u8; 4]], asked: PixelFormat) -> Result<PixelFormat, String> {
    let offered: Vec<PixelFormat> = fourccs.iter().filter_map(PixelFormat::from_fourcc).collect();
    if offered.contains(&asked) {
        return Ok(asked);
    }
    if let Some(t) = asked.twin().filter(|t| offered.contains(t)) {
        log::info!("{path}: {asked:?} is offered as {t:?} (same pixels, other plane layout); using it");
        return Ok(t);
    }
    let f = *PixelFormat::ALL
        .iter()
        .find(|p| offered.contains(p))
        .ok_or_else(|| none_readable(path, caps, fourccs))?;
    log::warn!("{path}: camera.format {asked:?} not offered, using {f:?}");
    Ok(f)
}

/// Raspberry Pi camera modules (CSI) reach V4L2 as raw Bayer from the receiver (`unicam` on a Pi 4 and
/// earlier, `rp1-cfe` on a Pi 5); the ISP that makes pictures of it is driven by libcamera. Those nodes get a
/// pointer to the route that works: mien under libcamera's V4L2 compatibility layer.
pub fn libcamera_hint(driver: &str) -> &'static str {
    match driver {
        "unicam" | "bcm2835-unicam" | "rp1-cfe" | "bcm2835-isp" | "pispbe" => {
            "; a Raspberry Pi camera module streams through libcamera: run mien under libcamerify (README, \"Flash a board\")"
        }
        _ => "",
    }
}

impl V4l2Source {
    /// Open the device now; a missing or busy device is a fatal, clearly worded error.
    pub fn open(path: &str, cam: &CameraConfig) -> Result<Self, SourceError> {
        let open = Self::try_open(path, cam).map_err(SourceError::Fatal)?;
        log::info!(
            "camera {path}: {}x{} {} strides {:?}, {} buffers{}",
            open.width,
            open.height,
            open.format.name(),
            open.strides,
            cam.buffers,
            if open.multi { ", multi-planar" } else { "" }
        );
        Ok(V4l2Source {
            path: path.into(),
            cam: cam.clone(),
            id: open.id.clone(),
            open: Some(open),
            backoff: BACKOFF_MIN,
            next_try: Instant::now(),
            reconnects: 0,
            said: None,
        })
    }

    /// Reopen the camera: at its node if that node is still this camera, else at whichever capture node now
    /// has the same card name and bus (the camera came back as /dev/videoN+k).
    fn reopen(&mut self) -> Result<Open, String> {
        let first = match Self::try_open(&self.path, &self.cam) {
            Ok(o) if o.id == self.id => return Ok(o),
            Ok(o) => format!("{}: now another camera ({} at {})", self.path, o.id.card, o.id.bus),
            Err(e) => e,
        };
        for node in capture_nodes().into_iter().filter(|n| *n != self.path) {
            let same = v4l2io::open(&node).and_then(|d| v4l2io::query_caps(&d)).is_ok_and(|c| {
                c.card == self.id.card && c.bus == self.id.bus && c.capture().is_some()
            });
            if same {
                let o = Self::try_open(&node, &self.cam)?;
                let (card, bus) = (&self.id.card, &self.id.bus);
                log::warn!("camera {}: back as {node} (same card {card:?} on bus {bus}); following it", self.path);
                self.path = node;
                return Ok(o);
            }
        }
        Err(first)
    }

    fn try_open(path: &str, cam: &CameraConfig) -> Result<Open, String> {
        let dev = v4l2io::open(path).map_err(|e| describe_io(path, &e))?;
        let caps = v4l2io::query_caps(&dev).map_err(|e| describe_io(path, &e))?;
        let q = caps
            .capture()
            .ok_or_else(|| format!("{path}: {} ({}) is not a video capture device", caps.card, caps.driver))?;
        let fourccs = v4l2io::enum_formats(&dev, q).map_err(|e| describe_io(path, &e))?;
        let want = choose(path, &caps, &fourccs, cam.format)?;
        let fmt = v4l2io::set_format(&dev, q, want.fourcc(), cam.width, cam.height)
            .map_err(|e| format!("{path}: cannot set format: {e}"))?;
        let format = PixelFormat::from_fourcc(&fmt.fourcc).ok_or_else(|| {
            format!("{path}: driver chose format {} that mien cannot read", String::from_utf8_lossy(&fmt.fourcc))
        })?;
        if fmt.planes.len() != format.planes() {
            let (got, want) = (fmt.planes.len(), format.planes());
            return Err(format!("{path}: driver gave {format:?} in {got} planes, mien reads it in {want}"));
        }
        if (fmt.width, fmt.height) != (cam.width, cam.height) {
            log::warn!("{path}: asked {}x{}, driver gave {}x{}", cam.width, cam.height, fmt.width, fmt.height);
        }
        if cam.fps > 0.0 {
            if let Err(e) = v4l2io::set_fps(&dev, q, cam.fps.round() as u32) {
                log::warn!("{path}: cannot set {} fps: {e}", cam.fps);
            }
        }
        let mut stream = v4l2io::Stream::new(dev, q, cam.buffers).map_err(|e| describe_io(path, &e))?;
        stream.set_timeout(Duration::from_millis(cam.timeout_ms as u64));
        let strides = fmt.planes.iter().map(|&(bpl, _)| bpl as usize).collect();
        let id = Identity { card: caps.card, bus: caps.bus };
        Ok(Open { stream, multi: q.multi, format, width: fmt.width, height: fmt.height, strides, id })
    }

    fn lose(&mut self, why: String) -> SourceError {
        // Dropping the stream unmaps and frees its buffers; on an unplugged camera those calls fail (ENODEV), harmlessly.
        self.open = None;
        self.next_try = Instant::now() + self.backoff;
        let repeat = self.said.as_ref().is_some_and(|(w, t)| *w == why && t.elapsed() < REPEAT_LOG);
        if repeat {
            log::debug!("camera {}: {why}; reconnecting in {:?}", self.path, self.backoff);
        } else {
            log::warn!("camera {}: {why}; reconnecting in {:?}", self.path, self.backoff);
            self.said = Some((why.clone(), Instant::now()));
        }
        SourceError::Unavailable(why)
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        if self.open.is_none() {
            let now = Instant::now();
            if self.next_try > now {
                std::thread::sleep(self.next_try - now);
            }
            match self.reopen() {
                Ok(o) => {
                    self.reconnects += 1;
                    self.backoff = BACKOFF_MIN;
                    self.said = None;
                    log::info!("camera {}: reconnected ({}x{})", self.path, o.width, o.height);
                    self.open = Some(o);
                }
                Err(e) => {
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    return Err(self.lose(e));
                }
            }
        }
        let o = self.open.as_mut().expect("opened above");
        let (fmt, w, h) = (o.format, o.width, o.height);
        // A buffer the driver flagged as bad is dropped unconverted.
        let got = o.stream.next().map(|(planes, meta)| {
            let seq = meta.sequence;
            if meta.flags & V4L2_BUF_FLAG_ERROR != 0 {
                return Err(format!("frame seq {seq}: driver flagged the buffer as bad"));
            }
            let planes: Vec<(&[u8], usize)> = planes.into_iter().zip(o.strides.iter().copied()).collect();
            super::convert_planes(fmt, &planes, w, h, frame).map_err(|e| format!("frame seq {seq}: {e}"))
        });
        match got {
            Ok(converted) => converted.map_err(SourceError::Corrupt)?,
            Err(e) => {
                let why = describe_io(&self.path, &e);
                return Err(self.lose(why));
            }
        }
        frame.ts_ms = now_ms();
        Ok(true)
    }

    fn describe(&self) -> String {
        format!("v4l2 {} ({}x{} {:?})", self.path, self.cam.width, self.cam.height, self.cam.format)
    }

    fn reconnects(&self) -> u64 {
        self.reconnects
    }
}

/// /dev/video* in number order.
fn capture_nodes() -> Vec<String> {
    let mut nodes: Vec<(u32, String)> = std::fs::read_dir("/dev")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let n = name.strip_prefix("video")?.parse().ok()?;
                    Some((n, format!("/dev/{name}")))
                })
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(driver: &str) -> v4l2io::Caps {
        v4l2io::Caps { driver: driver.into(), card: "cam".into(), bus: "platform:x".into(), caps: v4l2io::CAP_VIDEO_CAPTURE }
    }

    #[test]
    fn the_asked_format_then_its_plane_layout_twin_then_the_first_readable_one_and_bayer_only_nodes_are_explained() {
        let c = caps("uvcvideo");
        assert_eq!(choose("/dev/video0", &c, &[*b"YUYV", *b"NV12"], PixelFormat::Nv12), Ok(PixelFormat::Nv12));
        // A multi-planar ISP offering NV12 only as NM12 still serves a profile that says NV12.
        assert_eq!(choose("/dev/video0", &c, &[*b"NM12", *b"YUYV"], PixelFormat::Nv12), Ok(PixelFormat::Nv12m));
        assert_eq!(choose("/dev/video0", &c, &[*b"YM12"], PixelFormat::Yu12), Ok(PixelFormat::Yu12m));
        // Not offered at all: the first one mien reads, in its order of preference.
        assert_eq!(choose("/dev/video0", &c, &[*b"MJPG", *b"YU12"], PixelFormat::Yuyv), Ok(PixelFormat::Yu12));
        // A Pi camera module's receiver: raw Bayer only; the message names what it offers and the libcamera route.
        let e = choose("/dev/video0", &caps("unicam"), &[*b"pRAA", *b"RG10"], PixelFormat::Yuyv).unwrap_err();
        assert!(e.contains("pRAA RG10") && e.contains("libcamerify") && e.contains("Flash a board"), "{e}");
        let e = choose("/dev/video0", &c, &[*b"H264"], PixelFormat::Yuyv).unwrap_err();
        assert!(e.contains("H264") && !e.contains("libcamerify"), "{e}");
    }
}
