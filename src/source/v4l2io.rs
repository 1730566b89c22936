//! The V4L2 calls mien makes, single- and multi-planar: capabilities, formats, frame rate, and MMAP streaming with
//! a poll timeout. The structs and ioctl numbers are the `v4l` crate's bindings; the calls are our own because
//! - the crate cannot stream the multi-planar API (`V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE`), which SoC camera
//!   pipelines and ISPs (the Pi's unicam and ISP nodes, rkisp1, i.MX, Qualcomm camss) speak, and
//! - it issues ioctls through `syscall(SYS_ioctl)`, which an LD_PRELOAD V4L2 layer cannot see. Raspberry Pi camera
//!   modules reach V4L2 programs through exactly such a layer (`libcamerify`, libcamera's v4l2-compat.so), as
//!   do libv4l2's format converters; every call here (open, ioctl, mmap, munmap, close) goes through libc's
//!   interposable symbols instead.
//!
//! Output streams exist so the tests can feed vivid's loopback with known frames (`examples/vfeed`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::{io, mem, os::raw::c_void, sync::Arc, time::Duration};
use v4l::v4l2::vidioc;
use v4l::v4l_sys::*;

/// VIDEO_MAX_PLANES in videodev2.h.
const MAX_PLANES: usize = 8;
const MEMORY_MMAP: u32 = v4l2_memory_V4L2_MEMORY_MMAP;
pub const CAP_VIDEO_CAPTURE: u32 = 0x1;
pub const CAP_VIDEO_OUTPUT: u32 = 0x2;
pub const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x1000;
pub const CAP_VIDEO_OUTPUT_MPLANE: u32 = 0x2000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;

/// Which queue of a device: capture or output, through the single- or the multi-planar API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    pub output: bool,
    pub multi: bool,
}

impl Queue {
    pub const CAPTURE: Queue = Queue { output: false, multi: false };
    pub const CAPTURE_MPLANE: Queue = Queue { output: false, multi: true };

    fn buf_type(self) -> u32 {
        match (self.output, self.multi) {
            (false, false) => v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE,
            (true, false) => v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT,
            (false, true) => v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
            (true, true) => v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
        }
    }
}

/// An open V4L2 node (non-blocking: reads wait in poll, with a timeout).
pub type Device = Arc<OwnedFd>;

pub fn open(path: &str) -> io::Result<Device> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    Ok(Arc::new(OwnedFd::from(f)))
}

/// One ioctl through libc (so an LD_PRELOAD layer sees it), retried on EINTR.
///
/// # Safety
/// `arg` must be the struct the kernel defines `code` with, initialised as the ioctl requires (pointers in it
/// valid for the call).
unsafe fn xioctl<T>(dev: &OwnedFd, code: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    loop {
        if libc::ioctl(dev.as_raw_fd(), code, arg as *mut T as *mut c_void) != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn zeroed<T>() -> T {
    // SAFETY: only used for the videodev2.h structs, which are plain integers, arrays, unions of them and raw
    // pointers: all-zero is a valid value of each (and the one the API asks for in unused fields).
    unsafe { mem::zeroed() }
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// VIDIOC_QUERYCAP: what the node is. `caps` are the node's own (device_caps when the driver reports them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caps {
    pub driver: String,
    pub card: String,
    pub bus: String,
    pub caps: u32,
}

impl Caps {
    /// The capture queue mien streams from: single-planar if the node has one, else multi-planar.
    pub fn capture(&self) -> Option<Queue> {
        if self.caps & CAP_VIDEO_CAPTURE != 0 {
            Some(Queue::CAPTURE)
        } else if self.caps & CAP_VIDEO_CAPTURE_MPLANE != 0 {
            Some(Queue::CAPTURE_MPLANE)
        } else {
            None
        }
    }

    /// The output queue, likewise (test feeders).
    pub fn output(&self) -> Option<Queue> {
        if self.caps & CAP_VIDEO_OUTPUT != 0 {
            Some(Queue { output: true, multi: false })
        } else if self.caps & CAP_VIDEO_OUTPUT_MPLANE != 0 {
            Some(Queue { output: true, multi: true })
        } else {
            None
        }
    }
}

pub fn query_caps(dev: &OwnedFd) -> io::Result<Caps> {
    let mut c: v4l2_capability = zeroed();
    // SAFETY: VIDIOC_QUERYCAP takes a v4l2_capability.
    unsafe { xioctl(dev, vidioc::VIDIOC_QUERYCAP, &mut c)? };
    let caps = if c.capabilities & CAP_DEVICE_CAPS != 0 { c.device_caps } else { c.capabilities };
    Ok(Caps { driver: text(&c.driver), card: text(&c.card), bus: text(&c.bus_info), caps })
}

/// The pixel formats the queue offers, as fourccs.
pub fn enum_formats(dev: &OwnedFd, q: Queue) -> io::Result<Vec<[u8; 4]>> {
    let mut out = Vec::new();
    for index in 0..256 {
        let mut d: v4l2_fmtdesc = zeroed();
        d.index = index;
        d.type_ = q.buf_type();
        // SAFETY: VIDIOC_ENUM_FMT takes a v4l2_fmtdesc.
        match unsafe { xioctl(dev, vidioc::VIDIOC_ENUM_FMT, &mut d) } {
            Ok(()) => out.push(d.pixelformat.to_le_bytes()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The format the driver settled on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// Per plane (one on the single-planar API): bytes per line and bytes per buffer.
    pub planes: Vec<(u32, u32)>,
}

/// Ask for `fourcc` at `width` x `height` (the driver picks line and plane sizes) and return what it set.
pub fn set_format(dev: &OwnedFd, q: Queue, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Format> {
    let mut f: v4l2_format = zeroed();
    f.type_ = q.buf_type();
    // SAFETY: VIDIOC_G_FMT / S_FMT take a v4l2_format; the kernel reads and writes its `pix` member for the
    // single-planar types and `pix_mp` for the MPLANE ones, which are therefore the ones accessed.
    unsafe {
        // Start from the current format, so the field order and colorspace stay the driver's.
        xioctl(dev, vidioc::VIDIOC_G_FMT, &mut f)?;
        if q.multi {
            let pm = &mut f.fmt.pix_mp;
            pm.width = width;
            pm.height = height;
            pm.pixelformat = u32::from_le_bytes(fourcc);
            // Zeroed line and plane sizes let the driver choose them (it keeps stale ones otherwise).
            pm.num_planes = 0;
            pm.plane_fmt = zeroed();
        } else {
            let p = &mut f.fmt.pix;
            p.width = width;
            p.height = height;
            p.pixelformat = u32::from_le_bytes(fourcc);
            p.bytesperline = 0;
            p.sizeimage = 0;
        }
        xioctl(dev, vidioc::VIDIOC_S_FMT, &mut f)?;
        if q.multi {
            let pm = f.fmt.pix_mp;
            let n = pm.num_planes as usize;
            if n == 0 || n > MAX_PLANES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("driver reports {n} planes")));
            }
            let planes = pm.plane_fmt[..n].iter().map(|p| (p.bytesperline, p.sizeimage)).collect();
            Ok(Format { fourcc: pm.pixelformat.to_le_bytes(), width: pm.width, height: pm.height, planes })
        } else {
            let p = f.fmt.pix;
            let planes = vec![(p.bytesperline, p.sizeimage)];
            Ok(Format { fourcc: p.pixelformat.to_le_bytes(), width: p.width, height: p.height, planes })
        }
    }
}

/// Ask the capture queue for `fps` frames per second.
pub fn set_fps(dev: &OwnedFd, q: Queue, fps: u32) -> io::Result<()> {
    let mut p: v4l2_streamparm = zeroed();
    p.type_ = q.buf_type();
    // SAFETY: VIDIOC_S_PARM takes a v4l2_streamparm; `capture` is its member for capture types.
    unsafe {
        p.parm.capture.timeperframe = v4l2_fract { numerator: 1, denominator: fps.max(1) };
        xioctl(dev, vidioc::VIDIOC_S_PARM, &mut p)
    }
}

struct Mapping {
    ptr: *mut u8,
    len: usize,
}

/// What a dequeued buffer said about itself.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    pub index: u32,
    pub sequence: u32,
    pub flags: u32,
    /// Per plane: the byte range of picture data in the mapping (after the driver's `data_offset`).
    pub used: Vec<(usize, usize)>,
}

/// MMAP streaming on one queue. Buffers are requested and mapped on creation, and unmapped and freed on drop
/// (after STREAMOFF). Capture: [`Stream::next`] hands out one buffer at a time and requeues it on the following
/// call.
pub struct Stream {
    dev: Device,
    q: Queue,
    bufs: Vec<Vec<Mapping>>,
    timeout_ms: i32,
    on: bool,
    held: Option<u32>,
    meta: Meta,
}

// SAFETY: the mappings are owned by this stream alone (nothing else holds their pointers) and stay valid until it
// is dropped; moving the stream to another thread moves that ownership with it.
unsafe impl Send for Stream {}

impl Stream {
    /// Request `count` MMAP buffers (the driver may grant another number) and map every plane of each.
    pub fn new(dev: Device, q: Queue, count: u32) -> io::Result<Stream> {
        let mut req: v4l2_requestbuffers = zeroed();
        req.count = count;
        req.type_ = q.buf_type();
        req.memory = MEMORY_MMAP;
        // SAFETY: VIDIOC_REQBUFS takes a v4l2_requestbuffers.
        unsafe { xioctl(&dev, vidioc::VIDIOC_REQBUFS, &mut req)? };
        let mut s = Stream { dev, q, bufs: Vec::new(), timeout_ms: -1, on: false, held: None, meta: Meta::default() };
        if req.count == 0 {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "the driver granted no buffers"));
        }
        for index in 0..req.count {
            let mut planes: [v4l2_plane; MAX_PLANES] = zeroed();
            let mut b = s.desc(index, &mut planes);
            // SAFETY: VIDIOC_QUERYBUF takes a v4l2_buffer; on MPLANE queues its m.planes points at `length`
            // v4l2_planes (`planes`, alive for the call).
            unsafe { xioctl(&s.dev, vidioc::VIDIOC_QUERYBUF, &mut b)? };
            // (length, offset) of each plane; QUERYBUF fills m.offset (single) or each plane's m.mem_offset.
            // SAFETY: reading the union members QUERYBUF wrote for MMAP memory.
            let parts: Vec<(usize, u32)> = if q.multi {
                planes[..(b.length as usize).min(MAX_PLANES)].iter().map(|p| (p.length as usize, unsafe { p.m.mem_offset })).collect()
            } else {
                vec![(b.length as usize, unsafe { b.m.offset })]
            };
            let mut maps = Vec::new();
            for (len, off) in parts {
                // SAFETY: maps `len` bytes of the buffer (plane) at the offset the driver gave; unmapped in Drop.
                let ptr = unsafe {
                    let prot = libc::PROT_READ | libc::PROT_WRITE;
                    libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, s.dev.as_raw_fd(), off as libc::off_t)
                };
                if ptr == libc::MAP_FAILED {
                    return Err(io::Error::last_os_error());
                }
                maps.push(Mapping { ptr: ptr as *mut u8, len });
            }
            // Pushed as it is mapped, so a failure further on still unmaps it (Drop).
            s.bufs.push(maps);
        }
        Ok(s)
    }

    /// Buffers granted.
    pub fn count(&self) -> usize {
        self.bufs.len()
    }

    /// Longest wait in [`Stream::next`] / [`Stream::dequeue`] before a TimedOut error.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout_ms = t.as_millis().min(i32::MAX as u128) as i32;
    }

    fn desc(&self, index: u32, planes: &mut [v4l2_plane; MAX_PLANES]) -> v4l2_buffer {
        let mut b: v4l2_buffer = zeroed();
        b.index = index;
        b.type_ = self.q.buf_type();
        b.memory = MEMORY_MMAP;
        if self.q.multi {
            b.length = MAX_PLANES as u32;
            b.m.planes = planes.as_mut_ptr();
        }
        b
    }

    /// The planes of buffer `index`, to fill before queueing it on an output stream.
    pub fn planes_mut(&mut self, index: usize) -> Vec<&mut [u8]> {
        // SAFETY: each mapping is `len` bytes, valid while `self` lives, and only reachable through `self`
        // (borrowed mutably here, so no other slice of it exists).
        self.bufs[index].iter().map(|m| unsafe { std::slice::from_raw_parts_mut(m.ptr, m.len) }).collect()
    }

    /// Hand buffer `index` to the driver; `used` is the bytes in each plane (output streams; capture passes
    /// none).
    pub fn queue(&mut self, index: u32, used: &[u32]) -> io::Result<()> {
        let mut planes: [v4l2_plane; MAX_PLANES] = zeroed();
        let maps = self.bufs.get(index as usize).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let n = maps.len() as u32;
        for ((p, m), &u) in planes.iter_mut().zip(maps).zip(used.iter().chain(std::iter::repeat(&0))) {
            p.length = m.len as u32;
            p.bytesused = u;
        }
        let mut b = self.desc(index, &mut planes);
        if self.q.multi {
            b.length = n;
        } else {
            b.bytesused = used.first().copied().unwrap_or(0);
        }
        // SAFETY: VIDIOC_QBUF takes a v4l2_buffer; on MPLANE queues m.planes points at `n` v4l2_planes.
        unsafe { xioctl(&self.dev, vidioc::VIDIOC_QBUF, &mut b) }
    }

    pub fn start(&mut self) -> io::Result<()> {
        let mut t = self.q.buf_type() as libc::c_int;
        // SAFETY: VIDIOC_STREAMON takes the buffer type as an int.
        unsafe { xioctl(&self.dev, vidioc::VIDIOC_STREAMON, &mut t)? };
        self.on = true;
        Ok(())
    }

    /// Wait (up to the timeout) for a buffer the driver is done with, and take it back.
    pub fn dequeue(&mut self) -> io::Result<Meta> {
        let events = if self.q.output { libc::POLLOUT } else { libc::POLLIN };
        let mut pfd = libc::pollfd { fd: self.dev.as_raw_fd(), events, revents: 0 };
        loop {
            // SAFETY: one valid pollfd.
            match unsafe { libc::poll(&mut pfd, 1, self.timeout_ms) } {
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
                -1 => return Err(io::Error::last_os_error()),
                0 => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no frame within {} ms", self.timeout_ms))),
                _ => break,
            }
        }
        let mut planes: [v4l2_plane; MAX_PLANES] = zeroed();
        let mut b = self.desc(0, &mut planes);
        // SAFETY: VIDIOC_DQBUF takes a v4l2_buffer; on MPLANE queues m.planes points at MAX_PLANES v4l2_planes.
        unsafe { xioctl(&self.dev, vidioc::VIDIOC_DQBUF, &mut b)? };
        let maps = self.bufs.get(b.index as usize).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("driver returned buffer {} of {}", b.index, self.bufs.len()))
        })?;
        // Never trust the driver's numbers beyond the mapping: bytesused and data_offset are clamped to it.
        let used = if self.q.multi {
            maps.iter()
                .zip(&planes)
                .map(|(m, p)| {
                    let end = (p.bytesused as usize).min(m.len);
                    ((p.data_offset as usize).min(end), end)
                })
                .collect()
        } else {
            vec![(0, (b.bytesused as usize).min(maps[0].len))]
        };
        Ok(Meta { index: b.index, sequence: b.sequence, flags: b.flags, used })
    }

    /// Capture: the next frame's planes (each the bytes the driver filled) and its metadata. The previous frame's
    /// buffer goes back to the driver first; on the first call every buffer is queued and streaming starts.
    pub fn next(&mut self) -> io::Result<(Vec<&[u8]>, &Meta)> {
        if !self.on {
            for i in 0..self.bufs.len() as u32 {
                self.queue(i, &[])?;
            }
            self.start()?;
        } else if let Some(i) = self.held.take() {
            self.queue(i, &[])?;
        }
        self.meta = self.dequeue()?;
        self.held = Some(self.meta.index);
        let maps = &self.bufs[self.meta.index as usize];
        // SAFETY: (start, end) lie within the mapping (clamped in dequeue); the driver does not write a buffer
        // until it is queued again, which needs `&mut self`, so the slices stay as they are while borrowed.
        let planes = maps
            .iter()
            .zip(&self.meta.used)
            .map(|(m, &(start, end))| unsafe { std::slice::from_raw_parts(m.ptr.add(start), end - start) })
            .collect();
        Ok((planes, &self.meta))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.on {
            let mut t = self.q.buf_type() as libc::c_int;
            // SAFETY: VIDIOC_STREAMOFF takes the buffer type as an int. An unplugged device fails with ENODEV,
            // which changes nothing here.
            let _ = unsafe { xioctl(&self.dev, vidioc::VIDIOC_STREAMOFF, &mut t) };
        }
        for m in self.bufs.iter().flatten() {
            // SAFETY: each mapping came from mmap with this length and is unmapped once.
            unsafe { libc::munmap(m.ptr as *mut c_void, m.len) };
        }
        // Free the driver's buffers, so the device can be set to another format by the next opener.
        let mut req: v4l2_requestbuffers = zeroed();
        req.type_ = self.q.buf_type();
        req.memory = MEMORY_MMAP;
        // SAFETY: VIDIOC_REQBUFS takes a v4l2_requestbuffers.
        let _ = unsafe { xioctl(&self.dev, vidioc::VIDIOC_REQBUFS, &mut req) };
    }
}
