//! Pixel kernels in one place: colour conversion, crop-and-resize, mosaic, blur, fill.
//!
//! The heavy lifting goes to SIMD crates that pick NEON / AVX2 / SSE at run time (yuvutils-rs for YUV,
//! fast_image_resize for resampling, libblur for blur); the loops written here are the simple ones
//! (mosaic averaging, fills, channel copies) and have unit tests.

use crate::frame::{Frame, Rect};
use fast_image_resize::{images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    #[error("frame data is {got} bytes, {format} {width}x{height} needs {need}")]
    Size { format: &'static str, width: u32, height: u32, got: usize, need: usize },
    #[error("conversion failed: {0}")]
    Convert(String),
    #[error("resize failed: {0}")]
    Resize(String),
}

/// `lines` lines of `line` bytes, `stride` bytes apart in `src`, as one tight buffer: borrowed when the lines are
/// already tight, else copied. yuvutils-rs 0.8 refuses packed YUYV and interleaved UV planes whose lines are
/// longer than the picture (awxkee/yuvutils-rs#85, #108), and cameras pad lines to their alignment (a Pi camera's
/// 3280-wide YUYV comes 6592 bytes a line). The caller has checked `src` holds every line.
fn tight(src: &[u8], stride: usize, line: usize, lines: usize) -> std::borrow::Cow<'_, [u8]> {
    if stride == line {
        std::borrow::Cow::Borrowed(&src[..line * lines])
    } else {
        let mut v = Vec::with_capacity(line * lines);
        for y in 0..lines {
            v.extend_from_slice(&src[y * stride..][..line]);
        }
        std::borrow::Cow::Owned(v)
    }
}

fn check_len(format: &'static str, width: u32, height: u32, got: usize, need: usize) -> Result<(), PixelError> {
    if got < need {
        return Err(PixelError::Size { format, width, height, got, need });
    }
    Ok(())
}

/// YUYV 4:2:2 (BT.601 limited range, what UVC and vivid send) into the RGB frame.
pub fn yuyv_to_rgb(src: &[u8], stride: usize, frame: &mut Frame) -> Result<(), PixelError> {
    let (w, h) = (frame.width, frame.height);
    // Two pixels share each 4-byte group: an odd width is not YUYV (found by the v4l2_buffer fuzz target:
    // yuvutils-rs panicked on one).
    if w % 2 != 0 {
        return Err(PixelError::Convert(format!("YUYV needs an even width, the buffer says {w}")));
    }
    let line = w as usize * 2;
    check_len("YUYV", w, h, src.len(), stride * (h as usize).saturating_sub(1) + line)?;
    let src = tight(src, stride, line, h as usize);
    let packed = yuvutils_rs::YuvPackedImage { yuy: &src, yuy_stride: line as u32, width: w, height: h };
    let rgb_stride = frame.stride() as u32;
    yuvutils_rs::yuyv422_to_rgb(
        &packed,
        &mut frame.data,
        rgb_stride,
        yuvutils_rs::YuvRange::Limited,
        yuvutils_rs::YuvStandardMatrix::Bt601,
    )
    .map_err(|e| PixelError::Convert(format!("{e:?}")))
}

/// 4:2:0 in one buffer as V4L2's single-planar NV12 and YU12 lay it out (`stride` bytes per Y line, at least the
/// width; the chroma after the Y plane) into the RGB frame. The planes are cut from the buffer's own length.
pub fn yuv420_to_rgb(src: &[u8], stride: usize, nv12: bool, frame: &mut Frame) -> Result<(), PixelError> {
    let h = frame.height as usize;
    let (ch, name) = (h.div_ceil(2), if nv12 { "NV12" } else { "YU12" });
    let y_len = stride * h;
    // NV12: one interleaved UV plane with the Y stride; YU12: U then V planes, each half the Y stride.
    let c_stride = if nv12 { stride } else { stride.div_ceil(2) };
    let need = y_len + c_stride * ch * if nv12 { 1 } else { 2 };
    check_len(name, frame.width, frame.height, src.len(), need)?;
    let (y, chroma) = src.split_at(y_len);
    if nv12 {
        yuv420_planes_to_rgb(&[(y, stride), (&chroma[..c_stride * ch], c_stride)], frame)
    } else {
        let (u, v) = chroma.split_at(c_stride * ch);
        yuv420_planes_to_rgb(&[(y, stride), (u, c_stride), (&v[..c_stride * ch], c_stride)], frame)
    }
}

/// 4:2:0 as separate planes, each `(bytes, bytes per line)`: two planes are NV12 (Y, interleaved UV), three are
/// YU12 (Y, U, V). This is how multi-planar V4L2 devices hand over NV12M and YUV420M buffers, one plane per
/// buffer. A plane shorter than its lines, or a line shorter than the width, is refused.
pub fn yuv420_planes_to_rgb(planes: &[(&[u8], usize)], frame: &mut Frame) -> Result<(), PixelError> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let (nv12, name) = match planes.len() {
        2 => (true, "NV12"),
        3 => (false, "YU12"),
        n => return Err(PixelError::Convert(format!("4:2:0 comes in 2 or 3 planes, the buffer has {n}"))),
    };
    // Each plane cut to exactly its lines: yuvutils-rs takes an odd height's last line from what follows the
    // line pairs, and a longer plane (a driver's sizeimage, padding) left it nothing there: a panic (found by
    // the v4l2_buffer fuzz target, kept in fuzz/regressions/v4l2_buffer/).
    let mut cut: Vec<(&[u8], usize)> = Vec::with_capacity(planes.len());
    for (i, &(data, stride)) in planes.iter().enumerate() {
        let (line, lines) = match i {
            0 => (w, h),
            _ if nv12 => (cw * 2, ch),
            _ => (cw, ch),
        };
        if stride < line {
            return Err(PixelError::Convert(format!("{name} plane {i}: {stride} bytes per line, the width needs {line}")));
        }
        check_len(name, frame.width, frame.height, data.len(), stride * lines)?;
        cut.push((&data[..stride * lines], stride));
    }
    let planes = cut;
    let rgb_stride = frame.stride() as u32;
    let (range, matrix) = (yuvutils_rs::YuvRange::Limited, yuvutils_rs::YuvStandardMatrix::Bt601);
    let (y, ys) = planes[0];
    let r = if nv12 {
        let uv = tight(planes[1].0, planes[1].1, cw * 2, ch);
        let img = yuvutils_rs::YuvBiPlanarImage {
            y_plane: y,
            y_stride: ys as u32,
            uv_plane: &uv,
            uv_stride: (cw * 2) as u32,
            width: frame.width,
            height: frame.height,
        };
        yuvutils_rs::yuv_nv12_to_rgb(&img, &mut frame.data, rgb_stride, range, matrix, yuvutils_rs::YuvConversionMode::Balanced)
    } else {
        let img = yuvutils_rs::YuvPlanarImage {
            y_plane: y,
            y_stride: ys as u32,
            u_plane: planes[1].0,
            u_stride: planes[1].1 as u32,
            v_plane: planes[2].0,
            v_stride: planes[2].1 as u32,
            width: frame.width,
            height: frame.height,
        };
        yuvutils_rs::yuv420_to_rgb(&img, &mut frame.data, rgb_stride, range, matrix)
    };
    r.map_err(|e| PixelError::Convert(format!("{name}: {e:?}")))
}

/// BT.601 limited range, as cameras send it.
fn bt601(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    (
        16.0 + 0.257 * r + 0.504 * g + 0.098 * b,
        128.0 - 0.148 * r - 0.291 * g + 0.439 * b,
        128.0 + 0.439 * r - 0.368 * g - 0.071 * b,
    )
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Packed RGB24 (`width` x `height`) into 4:2:0, NV12 or YU12 as one tightly packed buffer: the inverse of
/// `yuv420_to_rgb`, written independently of it (chroma averaged over each 2x2 block), for feeding test cameras.
pub fn rgb_to_yuv420(rgb: &[u8], width: usize, height: usize, nv12: bool) -> Vec<u8> {
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let mut y = Vec::with_capacity(width * height);
    let (mut u, mut v) = (vec![0f32; cw * ch], vec![0f32; cw * ch]);
    let mut n = vec![0f32; cw * ch];
    for (i, px) in rgb.chunks_exact(3).enumerate().take(width * height) {
        let (yy, uu, vv) = bt601(px[0] as f32, px[1] as f32, px[2] as f32);
        y.push(to_u8(yy));
        let c = (i / width / 2) * cw + (i % width) / 2;
        (u[c], v[c], n[c]) = (u[c] + uu, v[c] + vv, n[c] + 1.0);
    }
    let (u, v): (Vec<u8>, Vec<u8>) = u.iter().zip(&v).zip(&n).map(|((a, b), k)| (to_u8(a / k), to_u8(b / k))).unzip();
    let mut out = y;
    if nv12 {
        out.extend(u.iter().zip(&v).flat_map(|(a, b)| [*a, *b]));
    } else {
        out.extend_from_slice(&u);
        out.extend_from_slice(&v);
    }
    out
}

/// Packed RGB24 into YUYV 4:2:2 (BT.601 limited range): the inverse of `yuyv_to_rgb`, for feeding test
/// cameras (vivid's output) and benchmarks with what a UVC camera would send.
pub fn rgb_to_yuyv(rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len() / 3 * 2);
    let (yuv, c) = (bt601, to_u8);
    for px in rgb.chunks_exact(6) {
        let (y0, u0, v0) = yuv(px[0] as f32, px[1] as f32, px[2] as f32);
        let (y1, u1, v1) = yuv(px[3] as f32, px[4] as f32, px[5] as f32);
        out.extend_from_slice(&[c(y0), c((u0 + u1) / 2.0), c(y1), c((v0 + v1) / 2.0)]);
    }
    out
}

/// 8-bit grey into the RGB frame.
pub fn grey_to_rgb(src: &[u8], stride: usize, frame: &mut Frame) -> Result<(), PixelError> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    check_len("GREY", frame.width, frame.height, src.len(), stride * (h - 1) + w)?;
    for (y, row) in frame.data.chunks_exact_mut(w * 3).enumerate() {
        for (px, &g) in row.chunks_exact_mut(3).zip(&src[y * stride..y * stride + w]) {
            px.copy_from_slice(&[g, g, g]);
        }
    }
    Ok(())
}

/// Packed RGB24 (possibly with row padding) into the frame.
pub fn rgb_to_rgb(src: &[u8], stride: usize, frame: &mut Frame) -> Result<(), PixelError> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    check_len("RGB3", frame.width, frame.height, src.len(), stride * (h - 1) + w * 3)?;
    for (y, row) in frame.data.chunks_exact_mut(w * 3).enumerate() {
        row.copy_from_slice(&src[y * stride..y * stride + w * 3]);
    }
    Ok(())
}

/// A JPEG must end with its EOI marker (FF D9); camera drivers may pad MJPEG buffers with zeros after it.
/// Decoders fill a truncated JPEG with grey and carry on, so the check is done here: a cut-off frame is
/// refused rather than passed on half-empty.
pub fn check_jpeg_complete(data: &[u8]) -> Result<(), PixelError> {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if data.len() < 4 || data[..2] != [0xff, 0xd8] {
        return Err(PixelError::Convert("not a JPEG (no SOI marker)".into()));
    }
    if end < 2 || data[end - 2..end] != [0xff, 0xd9] {
        return Err(PixelError::Convert(format!("truncated JPEG ({} bytes, no EOI marker)", data.len())));
    }
    Ok(())
}

/// Crop-and-resize with one reused resampler (bilinear: what the models were trained with).
pub struct Scaler {
    resizer: Resizer,
}

impl Default for Scaler {
    fn default() -> Self {
        Scaler { resizer: Resizer::new() }
    }
}

impl Scaler {
    /// Resize the `src_rect` part of `frame` into `dst` (RGB24, `dst_w` x `dst_h`).
    pub fn crop_resize(
        &mut self,
        frame: &Frame,
        src_rect: Rect,
        dst: &mut [u8],
        dst_w: u32,
        dst_h: u32,
    ) -> Result<(), PixelError> {
        let err = |e: &dyn std::fmt::Display| PixelError::Resize(e.to_string());
        let src = ImageRef::new(frame.width, frame.height, &frame.data, PixelType::U8x3).map_err(|e| err(&e))?;
        let mut out = Image::from_slice_u8(dst_w, dst_h, dst, PixelType::U8x3).map_err(|e| err(&e))?;
        let opts = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(src_rect.x0 as f64, src_rect.y0 as f64, src_rect.width() as f64, src_rect.height() as f64);
        self.resizer.resize(&src, &mut out, &opts).map_err(|e| err(&e))
    }
}

/// Replace each `cell` x `cell` block of `rect` with its mean colour. With cells a sixth to an eighth
/// of a face wide this leaves nothing that identifies a person, and no deblurring can bring detail back:
/// the information is averaged away, not filtered.
pub fn mosaic(frame: &mut Frame, rect: Rect, cell: u32) {
    let cell = cell.max(1);
    let stride = frame.stride();
    let mut by = rect.y0;
    while by < rect.y1 {
        let bh = cell.min(rect.y1 - by);
        let mut bx = rect.x0;
        while bx < rect.x1 {
            let bw = cell.min(rect.x1 - bx);
            let mut sum = [0u64; 3];
            for y in by..by + bh {
                let row = &frame.data[y as usize * stride + bx as usize * 3..][..bw as usize * 3];
                for px in row.chunks_exact(3) {
                    sum[0] += px[0] as u64;
                    sum[1] += px[1] as u64;
                    sum[2] += px[2] as u64;
                }
            }
            let n = (bw * bh) as u64;
            let mean = [(sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8];
            for y in by..by + bh {
                let row = &mut frame.data[y as usize * stride + bx as usize * 3..][..bw as usize * 3];
                for px in row.chunks_exact_mut(3) {
                    px.copy_from_slice(&mean);
                }
            }
            bx += bw;
        }
        by += bh;
    }
}

/// Stack blur (a fast gaussian approximation, libblur) of `rect`, in place, `passes` times.
pub fn blur(frame: &mut Frame, rect: Rect, radius: u32, passes: u32) -> Result<(), PixelError> {
    let stride = frame.stride();
    let start = rect.y0 as usize * stride + rect.x0 as usize * 3;
    let end = (rect.y1 as usize - 1) * stride + rect.x1 as usize * 3;
    for _ in 0..passes.max(1) {
        let mut img = libblur::BlurImageMut {
            data: libblur::BufferStore::Borrowed(&mut frame.data[start..end]),
            width: rect.width(),
            height: rect.height(),
            stride: stride as u32,
            channels: libblur::FastBlurChannels::Channels3,
        };
        libblur::stack_blur(&mut img, libblur::AnisotropicRadius::new(radius.max(1)), libblur::ThreadingPolicy::Single)
            .map_err(|e| PixelError::Convert(format!("blur: {e:?}")))?;
    }
    Ok(())
}

/// Paint `rect` with one colour.
pub fn fill(frame: &mut Frame, rect: Rect, rgb: [u8; 3]) {
    let stride = frame.stride();
    for y in rect.y0..rect.y1 {
        let row = &mut frame.data[y as usize * stride + rect.x0 as usize * 3..][..rect.width() as usize * 3];
        for px in row.chunks_exact_mut(3) {
            px.copy_from_slice(&rgb);
        }
    }
}

/// Mean absolute difference between horizontally and vertically adjacent pixels inside `rect`,
/// ignoring pairs that straddle a `cell` boundary when `cell` > 0: a measure of the fine detail left.
pub fn detail(frame: &Frame, rect: Rect) -> f64 {
    let stride = frame.stride();
    let (mut sum, mut n) = (0u64, 0u64);
    for y in rect.y0..rect.y1.saturating_sub(1) {
        for x in rect.x0..rect.x1.saturating_sub(1) {
            let i = y as usize * stride + x as usize * 3;
            for c in 0..3 {
                let p = frame.data[i + c] as i32;
                sum += (p - frame.data[i + 3 + c] as i32).unsigned_abs() as u64;
                sum += (p - frame.data[i + stride + c] as i32).unsigned_abs() as u64;
                n += 2;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        sum as f64 / n as f64
    }
}

/// How much of `orig`'s fine detail inside `rect` is still in `after` (same size): the share of the original's
/// high-pass signal (a 4-neighbour Laplacian of the luma) that the other frame's high-pass carries along it,
/// sum(hp_orig * hp_after) / sum(hp_orig^2). 1 for an untouched region, about 0 for a mosaic, a blur or a
/// fill, whatever edges the blur itself adds (a mosaic's cell edges do not line up with the face's detail;
/// `detail` counts them, which on a face a few cells wide reads as detail kept).
pub fn detail_kept(orig: &Frame, after: &Frame, rect: Rect) -> f64 {
    let luma = |f: &Frame, x: u32, y: u32| -> f64 {
        let i = y as usize * f.stride() + x as usize * 3;
        0.299 * f.data[i] as f64 + 0.587 * f.data[i + 1] as f64 + 0.114 * f.data[i + 2] as f64
    };
    let hp = |f: &Frame, x: u32, y: u32| {
        4.0 * luma(f, x, y) - luma(f, x - 1, y) - luma(f, x + 1, y) - luma(f, x, y - 1) - luma(f, x, y + 1)
    };
    let (mut cross, mut energy) = (0.0, 0.0);
    for y in rect.y0.max(1)..rect.y1.min(orig.height.saturating_sub(1)) {
        for x in rect.x0.max(1)..rect.x1.min(orig.width.saturating_sub(1)) {
            let (a, b) = (hp(orig, x, y), hp(after, x, y));
            cross += a * b;
            energy += a * a;
        }
    }
    if energy <= 0.0 {
        0.0
    } else {
        (cross / energy).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(w: u32, h: u32) -> Frame {
        let mut f = Frame::new(w, h);
        let mut s = 12345u32;
        for v in f.data.iter_mut() {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            *v = (s >> 24) as u8;
        }
        f
    }

    #[test]
    fn mosaic_makes_cells_uniform_and_leaves_the_rest() {
        let mut f = noisy(64, 48);
        let before = f.clone();
        let r = Rect { x0: 8, y0: 8, x1: 40, y1: 40 };
        mosaic(&mut f, r, 8);
        for y in 8..40usize {
            for x in 8..40usize {
                let (cx, cy) = (8 + (x - 8) / 8 * 8, 8 + (y - 8) / 8 * 8);
                let i = (y * 64 + x) * 3;
                let j = (cy * 64 + cx) * 3;
                assert_eq!(f.data[i..i + 3], f.data[j..j + 3]);
            }
        }
        // outside the rect nothing changed
        assert_eq!(f.data[..8 * 64 * 3], before.data[..8 * 64 * 3]);
        assert!(detail(&f, Rect { x0: 8, y0: 8, x1: 16, y1: 16 }) == 0.0);
    }

    #[test]
    fn detail_kept_is_one_untouched_and_near_zero_after_a_mosaic_of_few_cells() {
        let f = noisy(64, 48);
        let r = Rect { x0: 8, y0: 8, x1: 32, y1: 32 };
        assert!((detail_kept(&f, &f, r) - 1.0).abs() < 1e-9);
        // A face 24 px wide under 3x3 cells: `detail` still reads much of it (the cell edges), detail_kept does not.
        let mut m = f.clone();
        mosaic(&mut m, r, 8);
        assert!(detail_kept(&f, &m, r) < 0.1, "{}", detail_kept(&f, &m, r));
        let mut b = f.clone();
        blur(&mut b, r, 6, 3).unwrap();
        assert!(detail_kept(&f, &b, r) < 0.2, "{}", detail_kept(&f, &b, r));
        // Dimmed but not blurred: the detail is all there.
        let mut d = f.clone();
        d.data.iter_mut().for_each(|v| *v /= 2);
        assert!(detail_kept(&f, &d, r) > 0.45, "{}", detail_kept(&f, &d, r));
    }

    #[test]
    fn blur_removes_detail_only_inside_rect() {
        let mut f = noisy(64, 48);
        let before = f.clone();
        let r = Rect { x0: 10, y0: 10, x1: 50, y1: 40 };
        let d0 = detail(&f, r);
        blur(&mut f, r, 8, 2).unwrap();
        assert!(detail(&f, r) < d0 / 4.0, "{} vs {}", detail(&f, r), d0);
        assert_eq!(f.data[..10 * 64 * 3], before.data[..10 * 64 * 3]);
        let last_row = 47 * 64 * 3;
        assert_eq!(f.data[last_row..], before.data[last_row..]);
    }

    #[test]
    fn rgb_to_yuyv_round_trips_within_rounding() {
        let mut src = Frame::new(8, 2);
        for (i, v) in src.data.iter_mut().enumerate() {
            *v = (i * 37 % 200 + 30) as u8;
        }
        // 4:2:2 shares chroma between pixel pairs: make each pair the same colour so only rounding remains.
        for px in 0..8 {
            let (a, b) = (px * 6, px * 6 + 3);
            let (first, rest) = src.data.split_at_mut(b);
            rest[..3].copy_from_slice(&first[a..a + 3]);
        }
        let yuyv = rgb_to_yuyv(&src.data);
        assert_eq!(yuyv.len(), 8 * 2 * 2);
        let mut back = Frame::new(8, 2);
        yuyv_to_rgb(&yuyv, 16, &mut back).unwrap();
        for (a, b) in src.data.iter().zip(&back.data) {
            assert!((*a as i32 - *b as i32).abs() <= 3, "{a} vs {b}");
        }
        // Lines padded to an alignment and bytes after the last line (a driver's sizeimage): the same picture.
        let padded: Vec<u8> = yuyv.chunks(16).flat_map(|l| l.iter().copied().chain([0x55; 8])).chain([9; 5]).collect();
        let mut again = Frame::new(8, 2);
        yuyv_to_rgb(&padded, 24, &mut again).unwrap();
        assert_eq!(again.data, back.data);
        assert!(matches!(yuyv_to_rgb(&padded[..24 + 15], 24, &mut again), Err(PixelError::Size { .. })));
    }

    #[test]
    fn nv12_and_yu12_round_trip_within_rounding_at_even_and_odd_sizes_and_refuse_short_buffers() {
        for (w, h) in [(8usize, 4usize), (7, 5), (1, 1), (640, 480)] {
            // 4:2:0 shares chroma over 2x2 blocks: make each block one colour so only rounding remains.
            let mut src = Frame::new(w as u32, h as u32);
            for y in 0..h {
                for x in 0..w {
                    let k = (y / 2) * 31 + (x / 2) * 17;
                    src.data[(y * w + x) * 3..][..3].copy_from_slice(&[(k % 200 + 30) as u8, (k * 7 % 180 + 40) as u8, (k * 3 % 190) as u8 + 20]);
                }
            }
            let mut outs = Vec::new();
            for nv12 in [true, false] {
                let buf = rgb_to_yuv420(&src.data, w, h, nv12);
                assert_eq!(buf.len(), w * h + 2 * w.div_ceil(2) * h.div_ceil(2));
                let mut back = Frame::new(w as u32, h as u32);
                // V4L2's NV12 chroma lines are as long as the Y lines; a packed odd-width buffer is not, so
                // decode packed buffers at even widths only, and odd ones through a padded copy.
                let stride = if nv12 { w.div_ceil(2) * 2 } else { w };
                let padded = pad_yuv420(&buf, w, h, stride, nv12);
                yuv420_to_rgb(&padded, stride, nv12, &mut back).unwrap_or_else(|e| panic!("{w}x{h} nv12={nv12}: {e}"));
                for (a, b) in src.data.iter().zip(&back.data) {
                    assert!((*a as i32 - *b as i32).abs() <= 3, "{w}x{h} nv12={nv12}: {a} vs {b}");
                }
                let e = yuv420_to_rgb(&padded[..padded.len() - 1], stride, nv12, &mut back).unwrap_err();
                assert!(matches!(e, PixelError::Size { .. }), "{e}");
                outs.push(back.data);
            }
            assert_eq!(outs[0], outs[1], "{w}x{h}: NV12 and YU12 of the same picture decode alike");
        }
    }

    #[test]
    fn separate_4_2_0_planes_with_their_own_strides_decode_as_the_single_buffer_does_and_bad_planes_are_refused() {
        let (w, h) = (10usize, 6usize);
        let mut src = Frame::new(w as u32, h as u32);
        for (i, p) in src.data.iter_mut().enumerate() {
            *p = (i * 37 % 251) as u8;
        }
        for nv12 in [true, false] {
            let buf = rgb_to_yuv420(&src.data, w, h, nv12);
            let mut whole = Frame::new(w as u32, h as u32);
            yuv420_to_rgb(&buf, w, nv12, &mut whole).unwrap();
            // NV12M / YUV420M: one buffer per plane, each with its own padding (as an ISP's planes may have).
            let (cw, ch) = (w / 2, h / 2);
            let pad = |data: &[u8], line: usize, lines: usize, stride: usize| -> Vec<u8> {
                (0..lines).flat_map(|y| data[y * line..][..line].iter().copied().chain(std::iter::repeat(0xAA).take(stride - line))).collect()
            };
            let y = pad(&buf[..w * h], w, h, w + 6);
            let planes: Vec<(Vec<u8>, usize)> = if nv12 {
                vec![(y, w + 6), (pad(&buf[w * h..], cw * 2, ch, cw * 2 + 2), cw * 2 + 2)]
            } else {
                let (u, v) = buf[w * h..].split_at(cw * ch);
                vec![(y, w + 6), (pad(u, cw, ch, cw + 3), cw + 3), (pad(v, cw, ch, cw + 1), cw + 1)]
            };
            let refs: Vec<(&[u8], usize)> = planes.iter().map(|(d, s)| (d.as_slice(), *s)).collect();
            let mut sep = Frame::new(w as u32, h as u32);
            yuv420_planes_to_rgb(&refs, &mut sep).unwrap();
            assert_eq!(sep.data, whole.data, "nv12={nv12}");
            // A short plane, a line shorter than the width, and a wrong plane count are refused.
            let mut short = refs.clone();
            short[1].0 = &short[1].0[..short[1].0.len() - 1];
            assert!(matches!(yuv420_planes_to_rgb(&short, &mut sep), Err(PixelError::Size { .. })));
            let mut narrow = refs.clone();
            narrow[0].1 = w - 1;
            assert!(yuv420_planes_to_rgb(&narrow, &mut sep).unwrap_err().to_string().contains("plane 0"));
            assert!(yuv420_planes_to_rgb(&refs[..1], &mut sep).is_err());
        }
    }

    /// A packed 4:2:0 buffer laid out with `stride` bytes per Y line (chroma lines: `stride` for NV12, half
    /// of it for YU12), as a driver with padded lines sends it.
    fn pad_yuv420(buf: &[u8], w: usize, h: usize, stride: usize, nv12: bool) -> Vec<u8> {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut out = Vec::new();
        let row = |out: &mut Vec<u8>, line: &[u8], len: usize| {
            out.extend_from_slice(line);
            out.resize(out.len() + len - line.len(), 0);
        };
        for y in 0..h {
            row(&mut out, &buf[y * w..][..w], stride);
        }
        let c = &buf[w * h..];
        if nv12 {
            for y in 0..ch {
                row(&mut out, &c[y * cw * 2..][..cw * 2], stride);
            }
        } else {
            for plane in 0..2 {
                for y in 0..ch {
                    row(&mut out, &c[plane * cw * ch + y * cw..][..cw], stride.div_ceil(2));
                }
            }
        }
        out
    }

    #[test]
    fn truncated_jpeg_is_refused() {
        assert!(check_jpeg_complete(&[0xff, 0xd8, 1, 2, 3, 0xff, 0xd9]).is_ok());
        assert!(check_jpeg_complete(&[0xff, 0xd8, 1, 2, 3, 0xff, 0xd9, 0, 0, 0]).is_ok());
        let e = check_jpeg_complete(&[0xff, 0xd8, 1, 2, 3, 4]).unwrap_err();
        assert!(e.to_string().contains("truncated JPEG"), "{e}");
        assert!(check_jpeg_complete(b"GIF89a..").is_err());
    }

    #[test]
    fn yuyv_grey_and_rgb_conversions() {
        // YUYV: Y=235 U=V=128 is white in limited range; Y=16 is black.
        let mut f = Frame::new(4, 2);
        let src = [235, 128, 235, 128, 16, 128, 16, 128, 235, 128, 235, 128, 16, 128, 16, 128];
        yuyv_to_rgb(&src, 8, &mut f).unwrap();
        assert!(f.data[0] > 250 && f.data[1] > 250 && f.data[2] > 250, "{:?}", &f.data[..3]);
        assert!(f.data[9] < 5, "{:?}", &f.data[6..12]);
        assert!(yuyv_to_rgb(&src[..10], 8, &mut f).is_err());
        let grey = [1u8, 2, 3, 4, 0xff, 5, 6, 7, 8, 0xff];
        grey_to_rgb(&grey, 5, &mut f).unwrap();
        assert_eq!(&f.data[..6], &[1, 1, 1, 2, 2, 2]);
        assert_eq!(&f.data[12..15], &[5, 5, 5]);
        let rgb: Vec<u8> = (0..24).collect();
        rgb_to_rgb(&rgb, 12, &mut f).unwrap();
        assert_eq!(f.data, rgb);
    }
}
