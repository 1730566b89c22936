//! Multi-planar V4L2 (`V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE` and `_OUTPUT_MPLANE`), which the `v4l` crate cannot
//! stream: format negotiation, MMAP buffers with one mapping per plane, and queue/dequeue with a poll timeout.
//! SoC camera pipelines and ISPs (the Pi's unicam and ISP nodes, rkisp1, i.MX, Qualcomm camss) and some
//! HDMI/USB bridges speak only this API. The structs and ioctl numbers are the `v4l` crate's own bindings.
//!
//! Output streams exist so the tests can feed vivid's multi-planar loopback with known frames (`examples/vfeed`).

use std::{io, mem, os::raw::c_void, sync::Arc, time::Duration};
use v4l::device::Handle;
use v4l::v4l2::{self, vidioc};
use v4l::v4l_sys::*;

/// VIDEO_MAX_PLANES in videodev2.h.
const MAX_PLANES: usize = 8;
const MEMORY_MMAP: u32 = v4l2_memory_V4L2_MEMORY_MMAP;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Capture,
    Output,
}

impl Direction {
    fn buf_type(self) -> u32 {
        match self {
            Direction::Capture => v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
            Direction::Output => v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
        }
    }
}

/// The format the driver settled on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// Per plane: bytes per line and bytes per buffer.
    pub planes: Vec<(u32, u32)>,
}

/// One ioctl, retried on EINTR.
///
/// # Safety
/// `arg` must be the struct the kernel defines `code` with, initialised as the ioctl requires (pointers in it
/// valid for the call).
unsafe fn xioctl<T>(handle: &Handle, code: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    loop {
        match v4l2::ioctl(handle.fd(), code, arg as *mut T as *mut c_void) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn zeroed<T>() -> T {
    // SAFETY: only used for the videodev2.h structs, which are plain integers, arrays, unions of them and raw
    // pointers: all-zero is a valid value of each (and the one the API asks for in unused fields).
    unsafe { mem::zeroed() }
}

/// The pixel formats the device offers in this direction, as fourccs.
pub fn enum_formats(handle: &Handle, dir: Direction) -> io::Result<Vec<[u8; 4]>> {
    let mut out = Vec::new();
    for index in 0..256 {
        let mut d: v4l2_fmtdesc = zeroed();
        d.index = index;
        d.type_ = dir.buf_type();
        // SAFETY: VIDIOC_ENUM_FMT takes a v4l2_fmtdesc.
        match unsafe { xioctl(handle, vidioc::VIDIOC_ENUM_FMT, &mut d) } {
            Ok(()) => out.push(d.pixelformat.to_le_bytes()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Ask for `fourcc` at `width` x `height` (the driver picks the line and plane sizes) and return what it set.
pub fn set_format(handle: &Handle, dir: Direction, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Format> {
    let mut f: v4l2_format = zeroed();
    f.type_ = dir.buf_type();
    // SAFETY: VIDIOC_G_FMT / S_FMT take a v4l2_format; for the MPLANE types the kernel reads and writes its
    // `pix_mp` member, which is therefore the one accessed.
    unsafe {
        xioctl(handle, vidioc::VIDIOC_G_FMT, &mut f)?;
        let pm = &mut f.fmt.pix_mp;
        pm.width = width;
        pm.height = height;
        pm.pixelformat = u32::from_le_bytes(fourcc);
        // Zeroed line and plane sizes let the driver choose them (it keeps stale ones otherwise).
        pm.num_planes = 0;
        pm.plane_fmt = zeroed();
        xioctl(handle, vidioc::VIDIOC_S_FMT, &mut f)?;
        let pm = f.fmt.pix_mp;
        let n = pm.num_planes as usize;
        if n == 0 || n > MAX_PLANES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("driver reports {n} planes")));
        }
        Ok(Format {
            fourcc: pm.pixelformat.to_le_bytes(),
            width: pm.width,
            height: pm.height,
            planes: pm.plane_fmt[..n].iter().map(|p| (p.bytesperline, p.sizeimage)).collect(),
        })
    }
}

/// Ask the capture side for `fps` frames per second.
pub fn set_fps(handle: &Handle, fps: u32) -> io::Result<()> {
    let mut p: v4l2_streamparm = zeroed();
    p.type_ = Direction::Capture.buf_type();
    // SAFETY: VIDIOC_S_PARM takes a v4l2_streamparm; `capture` is its member for capture types.
    unsafe {
        p.parm.capture.timeperframe = v4l2_fract { numerator: 1, denominator: fps.max(1) };
        xioctl(handle, vidioc::VIDIOC_S_PARM, &mut p)
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
    /// Per plane: the bytes of picture data, after the driver's `data_offset`.
    pub used: Vec<(usize, usize)>,
}

/// MMAP streaming on a multi-planar queue. Buffers are requested and mapped on creation, unmapped and freed on
/// drop (after STREAMOFF). Capture: [`Stream::next`] hands out one buffer at a time and requeues it on the
/// following call, as the `v4l` crate's single-planar stream does.
pub struct Stream {
    handle: Arc<Handle>,
    dir: Direction,
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
    pub fn new(handle: Arc<Handle>, dir: Direction, count: u32) -> io::Result<Stream> {
        let mut req: v4l2_requestbuffers = zeroed();
        req.count = count;
        req.type_ = dir.buf_type();
        req.memory = MEMORY_MMAP;
        // SAFETY: VIDIOC_REQBUFS takes a v4l2_requestbuffers.
        unsafe { xioctl(&handle, vidioc::VIDIOC_REQBUFS, &mut req)? };
        let mut s = Stream { handle, dir, bufs: Vec::new(), timeout_ms: -1, on: false, held: None, meta: Meta::default() };
        if req.count == 0 {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "the driver granted no buffers"));
        }
        for index in 0..req.count {
            let mut planes: [v4l2_plane; MAX_PLANES] = zeroed();
            let mut b = s.desc(index, &mut planes);
            // SAFETY: VIDIOC_QUERYBUF takes a v4l2_buffer whose m.planes points at `length` v4l2_planes (`planes`,
            // alive for the call).
            unsafe { xioctl(&s.handle, vidioc::VIDIOC_QUERYBUF, &mut b)? };
            let mut maps = Vec::new();
            for p in &planes[..(b.length as usize).min(MAX_PLANES)] {
                let len = p.length as usize;
                // SAFETY: maps `len` bytes of the buffer's plane at the offset the driver gave (m.mem_offset is the
                // member QUERYBUF fills for MMAP memory); unmapped in Drop.
                let ptr = unsafe {
                    let off = p.m.mem_offset as libc::off_t;
                    v4l2::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, s.handle.fd(), off)?
                };
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
        b.type_ = self.dir.buf_type();
        b.memory = MEMORY_MMAP;
        b.length = MAX_PLANES as u32;
        b.m.planes = planes.as_mut_ptr();
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
        for (p, m) in planes.iter_mut().zip(maps) {
            p.length = m.len as u32;
        }
        for (p, &u) in planes.iter_mut().zip(used) {
            p.bytesused = u;
        }
        let n = maps.len() as u32;
        let mut b = self.desc(index, &mut planes);
        b.length = n;
        // SAFETY: VIDIOC_QBUF takes a v4l2_buffer whose m.planes points at `n` v4l2_planes (`planes`).
        unsafe { xioctl(&self.handle, vidioc::VIDIOC_QBUF, &mut b) }
    }

    pub fn start(&mut self) -> io::Result<()> {
        let mut t = self.dir.buf_type();
        // SAFETY: VIDIOC_STREAMON takes the buffer type as an int.
        unsafe { xioctl(&self.handle, vidioc::VIDIOC_STREAMON, &mut t)? };
        self.on = true;
        Ok(())
    }

    /// Wait (up to the timeout) for a buffer the driver is done with, and take it back.
    pub fn dequeue(&mut self) -> io::Result<Meta> {
        let events = if self.dir == Direction::Capture { libc::POLLIN } else { libc::POLLOUT };
        let mut pfd = libc::pollfd { fd: self.handle.fd(), events, revents: 0 };
        loop {
            // SAFETY: one valid pollfd.
            match unsafe { libc::poll(&mut pfd, 1, self.timeout_ms) } {
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
                -1 => return Err(io::Error::last_os_error()),
                0 => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no buffer within {} ms", self.timeout_ms))),
                _ => break,
            }
        }
        let mut planes: [v4l2_plane; MAX_PLANES] = zeroed();
        let mut b = self.desc(0, &mut planes);
        // SAFETY: VIDIOC_DQBUF takes a v4l2_buffer whose m.planes points at MAX_PLANES v4l2_planes (`planes`).
        unsafe { xioctl(&self.handle, vidioc::VIDIOC_DQBUF, &mut b)? };
        let maps = self.bufs.get(b.index as usize).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("driver returned buffer {} of {}", b.index, self.bufs.len()))
        })?;
        // Never trust the driver's numbers beyond the mapping: bytesused and data_offset are clamped to it.
        let used = maps
            .iter()
            .zip(&planes)
            .map(|(m, p)| {
                let end = (p.bytesused as usize).min(m.len);
                ((p.data_offset as usize).min(end), end)
            })
            .collect();
        Ok(Meta { index: b.index, sequence: b.sequence, flags: b.flags, used })
    }

    /// Capture: the next frame's planes (each the bytes the driver filled) and its metadata. The previous
    /// frame's buffer goes back to the driver first; on the first call every buffer is queued and streaming
    /// starts.
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
            let mut t = self.dir.buf_type();
            // SAFETY: VIDIOC_STREAMOFF takes the buffer type as an int. An unplugged device fails with ENODEV,
            // which changes nothing here.
            let _ = unsafe { xioctl(&self.handle, vidioc::VIDIOC_STREAMOFF, &mut t) };
        }
        for m in self.bufs.iter().flatten() {
            // SAFETY: each mapping came from mmap with this length and is unmapped once.
            unsafe { v4l2::munmap(m.ptr as *mut c_void, m.len).ok() };
        }
        // Free the driver's buffers, so the device can be set to another format by the next opener.
        let mut req: v4l2_requestbuffers = zeroed();
        req.type_ = self.dir.buf_type();
        req.memory = MEMORY_MMAP;
        // SAFETY: VIDIOC_REQBUFS takes a v4l2_requestbuffers.
        let _ = unsafe { xioctl(&self.handle, vidioc::VIDIOC_REQBUFS, &mut req) };
    }
}
