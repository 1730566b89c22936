//! `mien eval`: expression accuracy through the firmware's own crop, pre-processing and tract runtime.
//!
//! Two kinds of data: FER+ as `../shared/data/ferplus` stores it (`images.u8` + `labels.csv`, 48x48 face crops),
//! and a folder of images with a `path,label` CSV. Face crops go straight to the classifier's crop path, or are
//! re-framed first (`CropMode::Reframe`: the detector finds the face in the crop and the firmware's crop box is cut
//! around it); uncropped images first go through the detector and the same crop box the pipeline uses (largest
//! face).

use crate::detect::{Detection, Detections, FaceDetector, Keypoints};
use crate::expression::{CropSet, Emotion, ExpressionClassifier, FaceCrop};
use crate::frame::{BBox, Frame, Rect};
use crate::pixels::{PixelError, Scaler};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const K: usize = Emotion::ALL.len();

/// Confusion matrix over the 8 FER+ classes (rows: truth, columns: prediction).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub confusion: [[u64; K]; K],
}

impl Metrics {
    pub fn add(&mut self, truth: Emotion, pred: Emotion) {
        self.confusion[truth.index()][pred.index()] += 1;
    }

    pub fn n(&self) -> u64 {
        self.confusion.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let hits: u64 = (0..K).map(|i| self.confusion[i][i]).sum();
        hits as f64 / self.n().max(1) as f64
    }

    fn support(&self, c: usize) -> u64 {
        self.confusion[c].iter().sum()
    }

    fn predicted(&self, c: usize) -> u64 {
        (0..K).map(|t| self.confusion[t][c]).sum()
    }

    /// Recall of class `c`; `None` when the data has no face of that class.
    pub fn recall(&self, c: Emotion) -> Option<f64> {
        let s = self.support(c.index());
        (s > 0).then(|| self.confusion[c.index()][c.index()] as f64 / s as f64)
    }

    fn f1(&self, c: usize) -> f64 {
        let tp = self.confusion[c][c] as f64;
        let (s, p) = (self.support(c) as f64, self.predicted(c) as f64);
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (s + p)
        }
    }

    /// Mean F1 over the classes that occur in the truth or the predictions (all 8 on FER+ test).
    pub fn macro_f1(&self) -> f64 {
        let classes: Vec<usize> = (0..K).filter(|&c| self.support(c) + self.predicted(c) > 0).collect();
        classes.iter().map(|&c| self.f1(c)).sum::<f64>() / classes.len().max(1) as f64
    }

    /// Per-class recall, the confusion matrix, and the final `accuracy=... macro_f1=... n=N` line.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{:<10} {:>7} {:>7} {:>7} {:>7}", "class", "n", "recall", "prec", "f1");
        for e in Emotion::ALL {
            let c = e.index();
            let prec = self.confusion[c][c] as f64 / self.predicted(c).max(1) as f64;
            let recall = self.recall(e).map_or("-".to_string(), |r| format!("{r:.4}"));
            let _ = writeln!(s, "{:<10} {:>7} {:>7} {:>7.4} {:>7.4}", e.as_str(), self.support(c), recall, prec, self.f1(c));
        }
        let _ = write!(s, "\nconfusion (rows truth, columns predicted)\n{:<10}", "");
        for e in Emotion::ALL {
            let _ = write!(s, " {:>6}", &e.as_str()[..e.as_str().len().min(6)]);
        }
        for e in Emotion::ALL {
            let _ = write!(s, "\n{:<10}", e.as_str());
            for v in self.confusion[e.index()] {
                let _ = write!(s, " {v:>6}");
            }
        }
        let _ = write!(s, "\n\naccuracy={:.4} macro_f1={:.4} n={}", self.accuracy(), self.macro_f1(), self.n());
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },
    #[error("{0}")]
    Classify(String),
}

fn data_err(path: &Path, msg: impl Into<String>) -> EvalError {
    EvalError::Data { path: path.into(), msg: msg.into() }
}

/// One labelled face image: a 48x48 FER+ crop, or a file (a face crop or a whole scene).
pub struct Item {
    pub name: String,
    pub label: Emotion,
    pub source: ItemSource,
}

pub enum ItemSource {
    /// Grey pixels, row-major (FER+).
    Grey { width: u32, height: u32, pixels: Vec<u8> },
    File(PathBuf),
}

/// A data set plus what was skipped while reading it.
pub struct Dataset {
    pub items: Vec<Item>,
    /// Rows whose label is not one of the 8 FER+ classes (FER+ `unknown`/`NF`, or anything else in a CSV).
    pub skipped: usize,
}

/// FER+ in `../shared/data/ferplus`'s layout. `split` is train, val or test; `unknown` and `NF` rows are skipped.
pub fn read_ferplus(dir: &Path, split: &str) -> Result<Dataset, EvalError> {
    const SIDE: usize = 48;
    let csv_path = dir.join("labels.csv");
    let img_path = dir.join("images.u8");
    let text = std::fs::read_to_string(&csv_path).map_err(|e| data_err(&csv_path, e.to_string()))?;
    let pixels = std::fs::read(&img_path).map_err(|e| data_err(&img_path, e.to_string()))?;
    if pixels.len() % (SIDE * SIDE) != 0 {
        return Err(data_err(&img_path, format!("{} bytes is not a whole number of 48x48 images", pixels.len())));
    }
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| data_err(&csv_path, format!("no `{name}` column")))
    };
    let (ci, cs, cl) = (col("index")?, col("split")?, col("label")?);
    let count = pixels.len() / (SIDE * SIDE);
    let mut ds = Dataset { items: Vec::new(), skipped: 0 };
    let mut seen_split = false;
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let bad = |m: String| data_err(&csv_path, format!("line {}: {m}", n + 2));
        if f.len() < header.len() {
            return Err(bad(format!("{} fields, header has {}", f.len(), header.len())));
        }
        if f[cs] != split {
            continue;
        }
        seen_split = true;
        let idx: usize = f[ci].parse().map_err(|_| bad(format!("index {:?} is not a number", f[ci])))?;
        if idx >= count {
            return Err(bad(format!("index {idx} but images.u8 holds {count} images")));
        }
        match f[cl].parse::<Emotion>() {
            Ok(label) => ds.items.push(Item {
                name: format!("ferplus:{idx}"),
                label,
                source: ItemSource::Grey {
                    width: SIDE as u32,
                    height: SIDE as u32,
                    pixels: pixels[idx * SIDE * SIDE..(idx + 1) * SIDE * SIDE].to_vec(),
                },
            }),
            Err(_) => ds.skipped += 1,
        }
    }
    if !seen_split {
        return Err(data_err(&csv_path, format!("no rows with split {split:?} (train, val or test)")));
    }
    Ok(ds)
}

/// A folder of images and a CSV with columns `path,label` (path relative to the folder, labels spelled as the
/// 8 FER+ classes; other labels are skipped and counted). A header row is recognised and skipped.
pub fn read_images(dir: &Path, labels: &Path) -> Result<Dataset, EvalError> {
    let text = std::fs::read_to_string(labels).map_err(|e| data_err(labels, e.to_string()))?;
    let mut ds = Dataset { items: Vec::new(), skipped: 0 };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (n == 0 && line.replace(' ', "").eq_ignore_ascii_case("path,label")) {
            continue;
        }
        let (path, label) = line
            .rsplit_once(',')
            .ok_or_else(|| data_err(labels, format!("line {}: expected `path,label`, got {line:?}", n + 1)))?;
        let path = path.trim().trim_matches('"');
        match label.trim().trim_matches('"').to_ascii_lowercase().parse::<Emotion>() {
            Ok(label) => ds.items.push(Item { name: path.to_string(), label, source: ItemSource::File(dir.join(path)) }),
            Err(_) => ds.skipped += 1,
        }
    }
    Ok(ds)
}

/// What an evaluation found.
pub struct Report {
    pub metrics: Metrics,
    pub skipped: usize,
    /// Uncropped images in which the detector found no face (not counted in the metrics).
    pub no_face: usize,
    /// Crops `CropMode::Reframe` found no face in, read as given (counted in the metrics).
    pub as_given: usize,
    /// Files that could not be decoded (not counted in the metrics).
    pub unreadable: Vec<String>,
    /// Time in the classifier (pre-processing + inference), summed over faces.
    pub classify: Duration,
}

impl Report {
    pub fn ms_per_face(&self) -> f64 {
        self.classify.as_secs_f64() * 1e3 / self.metrics.n().max(1) as f64
    }
}

/// How items reach the classifier.
pub enum CropMode<'a> {
    /// Every image is already a face crop: it is the crop box.
    Crops,
    /// Every image is a face crop, cut by some other tool with its own framing: the detector finds the face in it
    /// (the crop scaled up to `REFRAME_SIDE` and its edge pixels repeated around it, as far as half its side) and
    /// the classifier's own crop box is cut around that face, turned by its roll when `align` is set. So crops of
    /// any framing reach the model as the firmware would cut the face from a camera frame. A crop in which no face
    /// is found is read as given (counted in `LeftOut::as_given`).
    Reframe { detector: &'a mut dyn FaceDetector, align: bool },
    /// Whole scenes: the detector finds faces, the largest one is classified through the classifier's crop box,
    /// turned by the face's roll when `align` is set (as the firmware does with `expression.align`).
    Detect { detector: &'a mut dyn FaceDetector, align: bool },
}

impl<'a> CropMode<'a> {
    /// How items that are `crops` (or whole scenes) reach the classifier. The caller loads a detector for whole
    /// scenes and for crops it re-frames: crops without one are read as given, crops with one are re-framed,
    /// scenes are detected.
    pub fn with(crops: bool, detector: Option<&'a mut (dyn FaceDetector + 'static)>, align: bool) -> Self {
        match detector {
            None => CropMode::Crops,
            Some(detector) if crops => CropMode::Reframe { detector, align },
            Some(detector) => CropMode::Detect { detector, align },
        }
    }
}

/// The items that did not reach the classifier, and why.
#[derive(Debug, Default)]
pub struct LeftOut {
    /// Whole scenes in which the detector found no face.
    pub no_face: usize,
    /// Files that could not be decoded, with why.
    pub unreadable: Vec<String>,
    /// Crops `CropMode::Reframe` found no face in, read as given (they are classified).
    pub as_given: usize,
}

/// The shorter side a crop is scaled up to before `CropMode::Reframe` looks for the face in it (the detector's
/// pyramid finds faces from its `min_face`, 32 px by default; at this size a face that fills the crop is well inside
/// its range).
pub const REFRAME_SIDE: u32 = 192;

/// `src` scaled so that its shorter side is at least `REFRAME_SIDE`, centred on `canvas` with a margin of half its
/// longer side on every side, the margin its edge pixels repeated (as training pads a face). Returns the scaled
/// image's place on the canvas.
fn pad_out(src: &Frame, scaler: &mut Scaler, buf: &mut Vec<u8>, canvas: &mut Frame) -> Result<BBox, PixelError> {
    let k = (REFRAME_SIDE as f32 / src.width.min(src.height).max(1) as f32).max(1.0);
    let (w, h) = (((src.width as f32 * k).round() as u32).max(1), ((src.height as f32 * k).round() as u32).max(1));
    let (wu, hu) = (w as usize, h as usize);
    buf.resize(wu * hu * 3, 0);
    scaler.crop_resize(src, Rect { x0: 0, y0: 0, x1: src.width, y1: src.height }, buf, w, h)?;
    let m = (w.max(h) / 2) as usize;
    let (cw, ch) = (wu + 2 * m, hu + 2 * m);
    canvas.ensure_size(cw as u32, ch as u32);
    for y in 0..ch {
        let row = &buf[y.saturating_sub(m).min(hu - 1) * wu * 3..][..wu * 3];
        let out = &mut canvas.data[y * cw * 3..][..cw * 3];
        let (first, last) = (&row[..3], &row[row.len() - 3..]);
        out[..m * 3].chunks_exact_mut(3).for_each(|p| p.copy_from_slice(first));
        out[m * 3..(m + wu) * 3].copy_from_slice(row);
        out[(m + wu) * 3..].chunks_exact_mut(3).for_each(|p| p.copy_from_slice(last));
    }
    Ok(BBox { x0: m as f32, y0: m as f32, x1: (m + wu) as f32, y1: (m + hu) as f32 })
}

/// The firmware's path from an item to a classifier's input: decode, detect (largest face) or take the crop as it
/// is, then the classifier's crop box cut by `CropSet` (turned by the face's roll when aligning). Used by `mien
/// eval` and by `mien adapt`, so both see faces exactly as the running firmware does.
pub struct Cropper<'a> {
    mode: CropMode<'a>,
    crops: CropSet,
    frame: Frame,
    /// `CropMode::Reframe`'s scaled and padded crop, and its scaling buffer.
    canvas: Frame,
    scaled: Vec<u8>,
    scaler: Scaler,
    dets: Detections,
    slots: Vec<Option<usize>>,
    /// What `crop` left out so far.
    pub left_out: LeftOut,
}

impl<'a> Cropper<'a> {
    /// Crops of `size` (the classifier's input size).
    pub fn new(mode: CropMode<'a>, size: (u32, u32)) -> Self {
        let crops = CropSet::new(1, size.0, size.1);
        let (frame, dets, slots) = (Frame::new(1, 1), Detections::new(), Vec::with_capacity(1));
        let (canvas, scaled, scaler) = (Frame::new(1, 1), Vec::new(), Scaler::default());
        Cropper { mode, crops, frame, canvas, scaled, scaler, dets, slots, left_out: LeftOut::default() }
    }

    /// The face of `item`, cut with `crop_box` (the classifier's) around the detected face (valid until the next
    /// item); `None`, counted in `left_out`, for an unreadable file or a scene without a face.
    pub fn crop(&mut self, item: &Item, crop_box: impl Fn(&BBox) -> BBox) -> Result<Option<&FaceCrop>, EvalError> {
        self.crops.wipe();
        match &item.source {
            ItemSource::Grey { width, height, pixels } => {
                self.frame.ensure_size(*width, *height);
                for (d, &g) in self.frame.data.chunks_exact_mut(3).zip(pixels) {
                    d.fill(g);
                }
            }
            ItemSource::File(p) => {
                if let Err(e) = crate::source::replay::decode_image(p, &mut self.frame) {
                    self.left_out.unreadable.push(e);
                    return Ok(None);
                }
            }
        }
        let mut on_canvas = false;
        let face = match &mut self.mode {
            CropMode::Crops => None,
            CropMode::Reframe { detector, align } => {
                let err = |e: String| EvalError::Classify(format!("{}: {e}", item.name));
                let inner = pad_out(&self.frame, &mut self.scaler, &mut self.scaled, &mut self.canvas)
                    .map_err(|e| err(e.to_string()))?;
                detector.detect(&self.canvas, &mut self.dets).map_err(|e| err(e.to_string()))?;
                let within = |b: &BBox| {
                    let (x, y) = b.center();
                    x >= inner.x0 && x <= inner.x1 && y >= inner.y0 && y <= inner.y1
                };
                let largest = |a: &&Detection, b: &&Detection| a.bbox.area().total_cmp(&b.bbox.area());
                // A blurred-only box (`[detect.blur_also]`) is never a face the firmware reads.
                match self.dets.iter().filter(|d| !d.blur_only && within(&d.bbox)).max_by(largest) {
                    Some(best) => {
                        on_canvas = true;
                        Some((best.bbox, if *align { best.roll } else { 0.0 }))
                    }
                    None => {
                        self.left_out.as_given += 1;
                        None
                    }
                }
            }
            CropMode::Detect { detector, align } => {
                detector
                    .detect(&self.frame, &mut self.dets)
                    .map_err(|e| EvalError::Classify(format!("{}: {e}", item.name)))?;
                match self.dets.iter().filter(|d| !d.blur_only).max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area())) {
                    Some(best) => Some((best.bbox, if *align { best.roll } else { 0.0 })),
                    None => {
                        self.left_out.no_face += 1;
                        return Ok(None);
                    }
                }
            }
        };
        let f = if on_canvas { &self.canvas } else { &self.frame };
        let whole = BBox { x0: 0.0, y0: 0.0, x1: f.width as f32, y1: f.height as f32 };
        let crop_err = |e: PixelError| EvalError::Classify(format!("{}: {e}", item.name));
        match face {
            None => self.crops.extract(f, std::iter::once(Some((&whole, 0.0))), |b| *b, 1, &mut self.slots),
            Some((b, roll)) => self.crops.extract(f, std::iter::once(Some((&b, roll))), crop_box, 1, &mut self.slots),
        }
        .map_err(crop_err)?;
        match self.slots.first().copied() {
            Some(Some(slot)) => Ok(Some(self.crops.get(slot))),
            _ => {
                self.left_out.no_face += 1;
                Ok(None)
            }
        }
    }
}

impl Drop for Cropper<'_> {
    fn drop(&mut self) {
        self.crops.wipe(); // no face pixels outlive the run
        self.canvas.data.fill(0);
        self.scaled.fill(0);
    }
}

/// Classify every item through the firmware's path (CropSet crop/resize, the classifier's own pre-processing).
pub fn evaluate(
    ds: &Dataset,
    classifier: &mut dyn ExpressionClassifier,
    mode: CropMode,
    mut progress: impl FnMut(usize, usize),
) -> Result<Report, EvalError> {
    let mut cropper = Cropper::new(mode, classifier.input_size());
    let mut rep = Report {
        metrics: Metrics::default(),
        skipped: ds.skipped,
        no_face: 0,
        as_given: 0,
        unreadable: Vec::new(),
        classify: Duration::ZERO,
    };
    for (i, item) in ds.items.iter().enumerate() {
        progress(i, ds.items.len());
        let Some(crop) = cropper.crop(item, |b| classifier.crop_box(b))? else { continue };
        let t = Instant::now();
        let e = classifier.classify(crop).map_err(|e| EvalError::Classify(format!("{}: {e}", item.name)))?;
        rep.classify += t.elapsed();
        rep.metrics.add(item.label, e.label);
    }
    progress(ds.items.len(), ds.items.len());
    let LeftOut { no_face, unreadable, as_given } = std::mem::take(&mut cropper.left_out);
    Ok(Report { no_face, unreadable, as_given, ..rep })
}

/// Where the detector puts its box and keypoints on FER-style crops (`mien eval --measure-crop`).
#[derive(Debug, Clone)]
pub struct CropMeasure {
    pub found: usize,
    pub tried: usize,
    /// Median FER crop side / the box's longer side.
    pub scale: f32,
    /// Median (FER crop centre - box centre) / box height.
    pub shift: f32,
    /// Median position of each keypoint in the FER crop (0..1, x right, y down): the template a keypoint-drawn
    /// crop is fitted to (`fit_to_keypoints`).
    pub template: Keypoints,
    /// How well each way re-draws the FER crop from a detection, with the medians above: quartiles (25, 50, 75%)
    /// of the side drawn / the FER crop's side, then of the centre's miss as a share of the side. Box first,
    /// then keypoints.
    pub box_fit: ([f32; 3], [f32; 3]),
    pub keypoint_fit: ([f32; 3], [f32; 3]),
}

/// Each 48x48 face is scaled up `up` times onto a mid-grey canvas twice its size and detected; the detection
/// that overlaps it best is compared with the crop: see `CropMeasure`.
pub fn measure_crop(ds: &Dataset, detector: &mut dyn FaceDetector, limit: usize, up: u32) -> CropMeasure {
    let mut frame = Frame::new(1, 1);
    let mut dets = Detections::new();
    let mut seen: Vec<(BBox, BBox, Option<Keypoints>)> = Vec::new();
    let mut tried = 0;
    for item in ds.items.iter().take(limit) {
        let ItemSource::Grey { width, height, pixels } = &item.source else { continue };
        tried += 1;
        let (w, h) = (width * up * 2, height * up * 2);
        frame.ensure_size(w, h);
        frame.data.fill(128);
        let (ox, oy) = (width * up / 2, height * up / 2);
        for y in 0..height * up {
            for x in 0..width * up {
                let g = pixels[((y / up) * width + x / up) as usize];
                let o = (((oy + y) * w + ox + x) * 3) as usize;
                frame.data[o..o + 3].fill(g);
            }
        }
        if detector.detect(&frame, &mut dets).is_err() {
            continue;
        }
        let crop = BBox { x0: ox as f32, y0: oy as f32, x1: (ox + width * up) as f32, y1: (oy + height * up) as f32 };
        let Some(d) = dets.iter().filter(|d| !d.blur_only && d.bbox.iou(&crop) > 0.1).max_by(|a, b| a.score.total_cmp(&b.score)) else {
            continue;
        };
        seen.push((crop, d.bbox, d.keypoints));
    }
    let quartiles = |mut v: Vec<f32>| {
        v.sort_by(f32::total_cmp);
        let q = |f: f32| v.get(((v.len() as f32 - 1.0) * f).round() as usize).copied().unwrap_or(f32::NAN);
        [q(0.25), q(0.5), q(0.75)]
    };
    let scale = quartiles(seen.iter().map(|(c, b, _)| c.width() / b.width().max(b.height())).collect())[1];
    let shift = quartiles(seen.iter().map(|(c, b, _)| (c.center().1 - b.center().1) / b.height()).collect())[1];
    let in_crop = |c: &BBox, p: [f32; 2]| [(p[0] - c.x0) / c.width(), (p[1] - c.y0) / c.height()];
    let mut template = [[f32::NAN; 2]; 4];
    for (k, t) in template.iter_mut().enumerate() {
        for (axis, v) in t.iter_mut().enumerate() {
            *v = quartiles(seen.iter().filter_map(|(c, _, kp)| kp.map(|kp| in_crop(c, kp[k])[axis])).collect())[1];
        }
    }
    let miss = |c: &BBox, centre: (f32, f32)| (centre.0 - c.center().0).hypot(centre.1 - c.center().1) / c.width();
    let (mut bs, mut bc, mut ks, mut kc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (c, b, kp) in &seen {
        let side = b.width().max(b.height()) * scale;
        bs.push(side / c.width());
        bc.push(miss(c, (b.center().0, b.center().1 + shift * b.height())));
        if let Some((centre, side)) = kp.as_ref().and_then(|kp| fit_to_keypoints(kp, &template)) {
            ks.push(side / c.width());
            kc.push(miss(c, (centre[0], centre[1])));
        }
    }
    CropMeasure {
        found: seen.len(),
        tried,
        scale,
        shift,
        template,
        box_fit: (quartiles(bs), quartiles(bc)),
        keypoint_fit: (quartiles(ks), quartiles(kc)),
    }
}

/// A square crop fitted to a face's keypoints: the similarity (scale, turn, shift) that best maps `template`
/// (each keypoint's place in the crop, 0..1, x right, y down) onto `points` (frame pixels), by least squares over
/// the four points. Returns the crop's centre and side in frame pixels; `None` for a degenerate layout.
pub fn fit_to_keypoints(points: &Keypoints, template: &Keypoints) -> Option<([f32; 2], f32)> {
    let mean = |k: &Keypoints| {
        let s = k.iter().fold([0f32; 2], |a, p| [a[0] + p[0], a[1] + p[1]]);
        [s[0] / k.len() as f32, s[1] / k.len() as f32]
    };
    let (pm, tm) = (mean(points), mean(template));
    let (mut a, mut b, mut qq) = (0f32, 0f32, 0f32);
    for (p, t) in points.iter().zip(template) {
        let (px, py, qx, qy) = (p[0] - pm[0], p[1] - pm[1], t[0] - tm[0], t[1] - tm[1]);
        a += qx * px + qy * py;
        b += qx * py - qy * px;
        qq += qx * qx + qy * qy;
    }
    if !(qq > 1e-9) {
        return None;
    }
    // Template point t -> frame point pm + [[a, -b], [b, a]] (t - tm): the crop's side is hypot(a, b).
    let (a, b) = (a / qq, b / qq);
    let (cx, cy) = (0.5 - tm[0], 0.5 - tm[1]);
    let centre = [pm[0] + a * cx - b * cy, pm[1] + b * cx + a * cy];
    let side = a.hypot(b);
    (side.is_finite() && side > 0.0 && centre.iter().all(|v| v.is_finite())).then_some((centre, side))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypoints_fit_the_crop_they_were_drawn_in_turned_and_scaled() {
        let t: Keypoints = [[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.5, 0.78]];
        // The template drawn in a 200 px crop centred at (300, 150), turned 20 degrees.
        let (cos, sin) = (20f32.to_radians().cos(), 20f32.to_radians().sin());
        let p = t.map(|[x, y]| {
            let (u, v) = ((x - 0.5) * 200.0, (y - 0.5) * 200.0);
            [300.0 + cos * u - sin * v, 150.0 + sin * u + cos * v]
        });
        let (c, side) = fit_to_keypoints(&p, &t).unwrap();
        assert!((side - 200.0).abs() < 1e-2 && (c[0] - 300.0).abs() < 1e-2 && (c[1] - 150.0).abs() < 1e-2, "{c:?} {side}");
        assert!(fit_to_keypoints(&[[5.0, 5.0]; 4], &[[0.5, 0.5]; 4]).is_none(), "no layout, no crop");
    }

    #[test]
    fn metrics_match_a_hand_count() {
        let mut m = Metrics::default();
        // 3 happy (2 right), 1 sad (right), 1 anger called sad.
        for (t, p) in [
            (Emotion::Happiness, Emotion::Happiness),
            (Emotion::Happiness, Emotion::Happiness),
            (Emotion::Happiness, Emotion::Neutral),
            (Emotion::Sadness, Emotion::Sadness),
            (Emotion::Anger, Emotion::Sadness),
        ] {
            m.add(t, p);
        }
        assert_eq!(m.n(), 5);
        assert!((m.accuracy() - 0.6).abs() < 1e-12);
        assert_eq!(m.recall(Emotion::Happiness), Some(2.0 / 3.0));
        assert_eq!(m.recall(Emotion::Contempt), None);
        // F1: happiness 2*2/(3+2)=0.8, sadness 2*1/(1+2)=2/3, anger 0, neutral 0 (predicted once) -> mean of 4.
        let want = (0.8 + 2.0 / 3.0) / 4.0;
        assert!((m.macro_f1() - want).abs() < 1e-12, "{}", m.macro_f1());
        assert!(m.report().ends_with("accuracy=0.6000 macro_f1=0.3667 n=5"), "{}", m.report());
    }

    #[test]
    fn images_csv_skips_other_labels_and_names_bad_lines() {
        let d = tempfile::tempdir().unwrap();
        let csv = d.path().join("l.csv");
        std::fs::write(&csv, "path,label\na.png,happiness\nb.png,Contempt\nc.png,bored\n").unwrap();
        let ds = read_images(d.path(), &csv).unwrap();
        assert_eq!(ds.items.len(), 2);
        assert_eq!(ds.items[1].label, Emotion::Contempt);
        assert_eq!(ds.skipped, 1);
        std::fs::write(&csv, "a.png happiness\n").unwrap();
        let e = read_images(d.path(), &csv).err().unwrap().to_string();
        assert!(e.contains("line 1") && e.contains("path,label"), "{e}");
    }

    #[test]
    fn ferplus_reader_checks_sizes_and_splits() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("images.u8"), vec![7u8; 48 * 48 * 3]).unwrap();
        std::fs::write(
            d.path().join("labels.csv"),
            "index,split,label\n0,train,happiness\n1,test,unknown\n2,test,fear\n",
        )
        .unwrap();
        let ds = read_ferplus(d.path(), "test").unwrap();
        assert_eq!((ds.items.len(), ds.skipped), (1, 1));
        assert_eq!(ds.items[0].label, Emotion::Fear);
        let e = read_ferplus(d.path(), "validation").err().unwrap().to_string();
        assert!(e.contains("no rows with split"), "{e}");
        std::fs::write(d.path().join("images.u8"), vec![7u8; 100]).unwrap();
        let e = read_ferplus(d.path(), "test").err().unwrap().to_string();
        assert!(e.contains("not a whole number"), "{e}");
    }
}
