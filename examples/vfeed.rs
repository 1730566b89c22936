//! vfeed: keep feeding one raw frame into a V4L2 OUTPUT device (vivid's video output), so that vivid's
//! output->capture loopback shows that exact frame on its capture device. Used by the guest tests.
//!
//! All buffers are filled once, then only dequeued and requeued, so the output queue never runs dry (a
//! feeder that re-reads its file every frame cannot keep up with vivid under TCG). Single- and multi-planar
//! outputs (vivid loaded with multiplanar=2) alike, through mien's own V4L2 calls: the file holds the planes end
//! to end (NM12: Y then UV; YM12: Y, U, V), each cut at the size the driver set for it.
//! usage: vfeed DEV FILE WIDTH HEIGHT FOURCC [SECONDS]
use mien::source::v4l2io;
use std::{io, time::{Duration, Instant}};

const NBUF: u32 = 6;

fn main() -> io::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: vfeed DEV FILE WIDTH HEIGHT FOURCC [SECONDS]");
        std::process::exit(2);
    }
    let frame = std::fs::read(&a[2])?;
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let parse = |s: &str| s.parse::<u32>().map_err(|e| bad(format!("{s}: {e}")));
    let (w, h) = (parse(&a[3])?, parse(&a[4])?);
    let secs: u64 = a.get(6).and_then(|s| s.parse().ok()).unwrap_or(3600);
    let fourcc: [u8; 4] = a[5].as_bytes().try_into().map_err(|_| bad("FOURCC must be 4 characters".into()))?;
    let dev = v4l2io::open(&a[1])?;
    let q = v4l2io::query_caps(&dev)?.output().ok_or_else(|| bad(format!("{}: not a video output", a[1])))?;
    let fmt = v4l2io::set_format(&dev, q, fourcc, w, h)?;
    let sizes: Vec<usize> = fmt.planes.iter().map(|&(_, size)| size as usize).collect();
    if sizes.iter().sum::<usize>() != frame.len() || fmt.fourcc != fourcc {
        let got = String::from_utf8_lossy(&fmt.fourcc);
        eprintln!("vfeed: frame file is {} bytes, driver set {got} in planes of {sizes:?} bytes", frame.len());
        std::process::exit(3);
    }
    let mut s = v4l2io::Stream::new(dev, q, NBUF)?;
    s.set_timeout(Duration::from_secs(1));
    let used: Vec<u32> = sizes.iter().map(|&n| n as u32).collect();
    for i in 0..s.count() {
        let mut at = 0;
        for (plane, &n) in s.planes_mut(i).into_iter().zip(&sizes) {
            if plane.len() < n {
                eprintln!("vfeed: buffer {i} plane is {} bytes, the frame's {n}", plane.len());
                std::process::exit(3);
            }
            plane[..n].copy_from_slice(&frame[at..at + n]);
            at += n;
        }
        s.queue(i as u32, &used)?;
    }
    s.start()?;
    let api = if q.multi { "multi-planar" } else { "single-planar" };
    eprintln!("vfeed: streaming {w}x{h} {} {api}, planes {sizes:?}, {} buffers", String::from_utf8_lossy(&fourcc), s.count());
    let (t0, mut n) = (Instant::now(), 0u64);
    while t0.elapsed() < Duration::from_secs(secs) {
        // Wait for a buffer vivid has shown, and queue it again unchanged.
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
