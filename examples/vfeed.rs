//! vfeed: keep feeding one raw frame into a V4L2 OUTPUT device (vivid's video output), so that vivid's
//! output->capture loopback shows that exact frame on its capture device. Used by the guest tests.
//!
//! All buffers are filled once, then only dequeued and requeued, so the output queue never runs dry (a
//! feeder that re-reads its file every frame cannot keep up with vivid under TCG).
//! A multi-planar output (vivid loaded with multiplanar=2) goes through mien's own MPLANE streaming: the file
//! holds the planes end to end (NM12: Y then UV; YM12: Y, U, V), each cut at the size the driver set for it.
//! usage: vfeed DEV FILE WIDTH HEIGHT FOURCC [SECONDS]
use std::{io, mem, os::raw::c_void, time::{Duration, Instant}};
use v4l::prelude::*;
use v4l::v4l_sys::*;
use v4l::v4l2::{self, vidioc};
use v4l::video::Output;
use v4l::FourCC;

const NBUF: u32 = 6;

fn main() -> io::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: vfeed DEV FILE WIDTH HEIGHT FOURCC [SECONDS]");
        std::process::exit(2);
    }
    let frame = std::fs::read(&a[2])?;
    let parse = |s: &str| s.parse::<u32>().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{s}: {e}")));
    let (w, h) = (parse(&a[3])?, parse(&a[4])?);
    let secs: u64 = a.get(6).and_then(|s| s.parse().ok()).unwrap_or(3600);
    let fourcc: [u8; 4] = a[5].as_bytes().try_into().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "FOURCC must be 4 characters"))?;
    let dev = Device::with_path(&a[1])?;
    if dev.query_caps()?.capabilities.contains(v4l::capability::Flags::VIDEO_OUTPUT_MPLANE) {
        return feed_mplane(&dev, &frame, w, h, fourcc, secs);
    }
    let mut fmt = Output::format(&dev)?;
    fmt.width = w;
    fmt.height = h;
    fmt.fourcc = FourCC::new(&fourcc);
    // format() returns the old bytesperline/sizeimage and vivid honours custom strides: reset them.
    fmt.stride = 0;
    fmt.size = 0;
    let fmt = Output::set_format(&dev, &fmt)?;
    if fmt.size as usize != frame.len() {
        eprintln!("vfeed: frame file is {} bytes, driver expects {}", frame.len(), fmt.size);
        std::process::exit(3);
    }
    let fd = dev.handle().fd();
    let btype = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT;
    // SAFETY: plain V4L2 ioctls on an open fd with zero-initialised kernel structs; each mmap'd buffer is
    // `b.length` bytes (from QUERYBUF) and we copy at most `frame.len()` == sizeimage <= length bytes into it.
    unsafe {
        let mut req: v4l2_requestbuffers = mem::zeroed();
        req.count = NBUF;
        req.type_ = btype;
        req.memory = v4l2_memory_V4L2_MEMORY_MMAP;
        v4l2::ioctl(fd, vidioc::VIDIOC_REQBUFS, &mut req as *mut _ as *mut c_void)?;
        for i in 0..req.count {
            let mut b: v4l2_buffer = mem::zeroed();
            b.index = i;
            b.type_ = btype;
            b.memory = v4l2_memory_V4L2_MEMORY_MMAP;
            v4l2::ioctl(fd, vidioc::VIDIOC_QUERYBUF, &mut b as *mut _ as *mut c_void)?;
            if (b.length as usize) < frame.len() {
                eprintln!("vfeed: buffer {} is {} bytes, frame {}", i, b.length, frame.len());
                std::process::exit(3);
            }
            let p = v4l2::mmap(
                std::ptr::null_mut(),
                b.length as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                b.m.offset as libc::off_t,
            )?;
            std::ptr::copy_nonoverlapping(frame.as_ptr(), p as *mut u8, frame.len());
            b.bytesused = frame.len() as u32;
            v4l2::ioctl(fd, vidioc::VIDIOC_QBUF, &mut b as *mut _ as *mut c_void)?;
        }
        let mut t = btype as i32;
        v4l2::ioctl(fd, vidioc::VIDIOC_STREAMON, &mut t as *mut _ as *mut c_void)?;
        eprintln!("vfeed: streaming {}x{} {} with {} buffers", fmt.width, fmt.height, fmt.fourcc, req.count);
        let (t0, mut n) = (Instant::now(), 0u64);
        while t0.elapsed() < Duration::from_secs(secs) {
            // The device is non-blocking: wait for a consumed buffer before DQBUF.
            let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
            if libc::poll(&mut pfd, 1, 1000) <= 0 {
                continue;
            }
            let mut b: v4l2_buffer = mem::zeroed();
            b.type_ = btype;
            b.memory = v4l2_memory_V4L2_MEMORY_MMAP;
            v4l2::ioctl(fd, vidioc::VIDIOC_DQBUF, &mut b as *mut _ as *mut c_void)?;
            b.bytesused = frame.len() as u32;
            v4l2::ioctl(fd, vidioc::VIDIOC_QBUF, &mut b as *mut _ as *mut c_void)?;
            n += 1;
        }
        eprintln!("vfeed: {} frames in {:?}", n, t0.elapsed());
    }
    Ok(())
}

fn feed_mplane(dev: &Device, frame: &[u8], w: u32, h: u32, fourcc: [u8; 4], secs: u64) -> io::Result<()> {
    use mien::source::mplane::{self, Direction};
    let fmt = mplane::set_format(&dev.handle(), Direction::Output, fourcc, w, h)?;
    let sizes: Vec<usize> = fmt.planes.iter().map(|&(_, size)| size as usize).collect();
    if sizes.iter().sum::<usize>() != frame.len() || fmt.fourcc != fourcc {
        eprintln!("vfeed: frame file is {} bytes, driver set {} in planes of {sizes:?}", frame.len(), String::from_utf8_lossy(&fmt.fourcc));
        std::process::exit(3);
    }
    let mut s = mplane::Stream::new(dev.handle(), Direction::Output, NBUF)?;
    s.set_timeout(Duration::from_secs(1));
    let used: Vec<u32> = sizes.iter().map(|&n| n as u32).collect();
    for i in 0..s.count() {
        let mut at = 0;
        for (plane, &n) in s.planes_mut(i).into_iter().zip(&sizes) {
            plane[..n].copy_from_slice(&frame[at..at + n]);
            at += n;
        }
        s.queue(i as u32, &used)?;
    }
    s.start()?;
    eprintln!("vfeed: streaming {w}x{h} {} multi-planar, planes {sizes:?}, {} buffers", String::from_utf8_lossy(&fourcc), s.count());
    let (t0, mut n) = (Instant::now(), 0u64);
    while t0.elapsed() < Duration::from_secs(secs) {
        match s.dequeue() {
            Ok(m) => s.queue(m.index, &used)?,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
            Err(e) => return Err(e),
        }
        n += 1;
    }
    eprintln!("vfeed: {} frames in {:?}", n, t0.elapsed());
    Ok(())
}
