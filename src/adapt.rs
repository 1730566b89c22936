//! `mien adapt`: the pilot that adapts the expression model to a site with a few of its own labelled faces.
//!
//! The pilot's faces go through the firmware's own path (decode, detector, crop box, pre-processing; see
//! `eval::Cropper`) into the model's encoder, which gives one feature vector per face (the input of the model's
//! final `Gemm`, after global pooling). A new 8-way head is fitted on those features here, on the device: a
//! class-balanced softmax regression pulled towards the shipped head by an L2 penalty, so that classes the pilot
//! lacks keep what the shipped model knows. Cross-validation over the pilot faces gives the before/after figures
//! (and chooses the strength when several are given). The adapted model is the base file with only the head's
//! weights and bias replaced, plus metadata saying where it came from, written with its SHA-256 in the
//! `SHA256SUMS` beside it, so every loader accepts it. Crops and features stay in memory; the file holds weights
//! only.

use crate::eval::{CropMode, Cropper, Dataset, LeftOut, Metrics};
use crate::expression::{grey_standardized, Emotion, MienExpression};
use crate::model::{self, ModelError, Runnable};
use prost::Message;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tract_onnx::pb;

const K: usize = Emotion::ALL.len();
/// Fewer pilot faces than this in a class and its recall after adaptation is guesswork: `mien adapt` says so.
pub const FEW_FACES: usize = 5;
/// The default pull towards the shipped head, in units of the features' own scale (see `fit_head`). Measured on
/// site-colour (`docs/adapt.md`): with pilots of 1, 5, 10 and 20 faces per class, strength 1 gave held-out macro-F1
/// 0.357-0.363 at every size, against 0.249 for the shipped head; 0.01-0.1 overfit the pilot (0.15-0.24) and 10 or
/// more stays at the shipped head. Cross-validation over a pilot of a few faces per class picked badly (0.01 at 10
/// and 20 faces per class), so it chooses only among strengths the user gives (`--strength 0.1,1,10`).
pub const STRENGTHS: [f32; 1] = [1.0];

#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("model {path}: {msg}")]
    Graph { path: PathBuf, msg: String },
    #[error("pilot: {0}")]
    Pilot(String),
    #[error("{path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
}

/// A linear head over D features: logits = W f + b, W row-major K x D.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub dim: usize,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

impl Head {
    pub fn logits(&self, f: &[f32]) -> [f32; K] {
        let mut out = [0f32; K];
        for (c, o) in out.iter_mut().enumerate() {
            let row = &self.w[c * self.dim..(c + 1) * self.dim];
            *o = self.b[c] + row.iter().zip(f).map(|(w, x)| w * x).sum::<f32>();
        }
        out
    }

    pub fn predict(&self, f: &[f32]) -> Emotion {
        Emotion::top(&self.logits(f)).0
    }
}

/// A mien expression model opened for adaptation: its ONNX graph (to write the adapted copy), its head, and its
/// encoder (the graph cut at the head's input).
pub struct Base {
    pub path: PathBuf,
    pub sha256: String,
    proto: pb::ModelProto,
    weight_name: String,
    bias_name: String,
    pub head: Head,
    encoder: Runnable,
    size: usize,
    input: Vec<f32>,
}

fn tensor_f32(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    (t.raw_data.len() % 4 == 0)
        .then(|| t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

impl Base {
    /// Open a mien expression model (1x1xSxS grey in, 8 logits out of a final `Gemm` with its weights stored in
    /// the file). The file is checked against its `SHA256SUMS` like every model mien loads.
    pub fn open(path: &Path) -> Result<Base, AdaptError> {
        let graph_err = |msg: String| AdaptError::Graph { path: path.into(), msg };
        let verified = model::read_verified(path)?;
        let proto = pb::ModelProto::decode(verified.bytes.as_slice())
            .map_err(|e| graph_err(format!("not an ONNX model: {e}")))?;
        let g = proto.graph.as_ref().ok_or_else(|| graph_err("no graph".into()))?;
        let out = g.output.first().map(|o| o.name.clone()).ok_or_else(|| graph_err("no output".into()))?;
        let gemm = g
            .node
            .iter()
            .find(|n| n.op_type == "Gemm" && n.output.first() == Some(&out))
            .ok_or_else(|| graph_err(format!("output {out:?} does not come from a Gemm head: not a mien student")))?;
        let attr = |name: &str, default: f32| {
            let value = |a: &pb::AttributeProto| if a.r#type == 1 { a.f } else { a.i as f32 };
            gemm.attribute.iter().find(|a| a.name == name).map_or(default, value)
        };
        let plain = attr("transA", 0.0) == 0.0 && attr("transB", 0.0) == 1.0;
        if !plain || attr("alpha", 1.0) != 1.0 || attr("beta", 1.0) != 1.0 {
            return Err(graph_err("the head is a Gemm with transA, alpha or beta set, or without transB".into()));
        }
        if gemm.input.len() != 3 {
            return Err(graph_err("the head Gemm has no bias".into()));
        }
        let init = |name: &str| g.initializer.iter().find(|t| t.name == name);
        let (wt, bt) = match (init(&gemm.input[1]), init(&gemm.input[2])) {
            (Some(w), Some(b)) => (w, b),
            _ => return Err(graph_err("the head's weights are not stored in the file".into())),
        };
        let (w, b) = match (tensor_f32(wt), tensor_f32(bt)) {
            (Some(w), Some(b)) => (w, b),
            _ => return Err(graph_err("the head's weights are not f32".into())),
        };
        let dim = wt.dims.get(1).copied().unwrap_or(0) as usize;
        if wt.dims.len() != 2 || wt.dims[0] as usize != K || w.len() != K * dim || b.len() != K || dim == 0 {
            return Err(graph_err(format!("head weights {:?}, bias {:?}: expected 8 x D and 8", wt.dims, bt.dims)));
        }
        let feature = gemm.input[0].clone();
        let (weight_name, bias_name) = (gemm.input[1].clone(), gemm.input[2].clone());
        let sha256 = verified.sha256.clone();
        let parsed = model::Parsed::from_verified(verified)?;
        let (input_name, dims) = parsed.input()?;
        let size = match dims[..] {
            [_, Some(1), Some(h), Some(w)] if h == w && (16..=256).contains(&h) && input_name != "face01" => h,
            _ => return Err(graph_err(format!("input {input_name} {dims:?}: mien adapts its own 1x1xSxS students"))),
        };
        let encoder = parsed.runnable_with_output(&feature, &[1, 1, size, size])?;
        Ok(Base {
            path: path.into(),
            sha256,
            proto,
            weight_name,
            bias_name,
            head: Head { dim, w, b },
            encoder,
            size,
            input: vec![0.0; size * size],
        })
    }

    /// The encoder's features for one face crop (pre-processed exactly as the firmware does).
    pub fn features(&mut self, crop: &crate::expression::FaceCrop) -> Result<Vec<f32>, AdaptError> {
        grey_standardized(crop.rgb(), &mut self.input);
        let out = model::run_f32(&self.encoder, &[1, 1, self.size, self.size], &self.input)
            .and_then(|o| model::output_f32(&o[0]).map(|f| f.to_vec()))
            .map_err(|e| AdaptError::Graph { path: self.path.clone(), msg: format!("encoder: {e:#}") })?;
        self.input.fill(0.0);
        if out.len() != self.head.dim {
            return Err(AdaptError::Graph {
                path: self.path.clone(),
                msg: format!("encoder gave {} features, the head takes {}", out.len(), self.head.dim),
            });
        }
        Ok(out)
    }

    pub fn input_size(&self) -> (u32, u32) {
        (self.size as u32, self.size as u32)
    }

    /// Write the base model with `head` in place of its own, plus `meta` as metadata, to `out` (atomically), and
    /// its SHA-256 into the `SHA256SUMS` beside it. Returns the SHA-256.
    pub fn write(&self, head: &Head, meta: &[(&str, String)], out: &Path) -> Result<String, AdaptError> {
        let mut proto = self.proto.clone();
        let g = proto.graph.as_mut().expect("checked at open");
        for t in g.initializer.iter_mut() {
            let data = if t.name == self.weight_name {
                &head.w
            } else if t.name == self.bias_name {
                &head.b
            } else {
                continue;
            };
            t.float_data.clear();
            t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        proto.metadata_props.retain(|p| !p.key.starts_with("mien.adapt"));
        for (k, v) in meta {
            proto.metadata_props.push(pb::StringStringEntryProto { key: format!("mien.adapt.{k}"), value: v.clone() });
        }
        let bytes = proto.encode_to_vec();
        let sha = model::sha256_hex(&bytes);
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.is_empty() || name == "SHA256SUMS" {
            return Err(AdaptError::Pilot(format!("--out {}: give a file name such as site.onnx", out.display())));
        }
        write_atomic(out, &bytes)?;
        let sums = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("SHA256SUMS");
        let old = match std::fs::read_to_string(&sums) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => return Err(AdaptError::Write { path: sums, err }),
        };
        let mut text: String = old
            .lines()
            .filter(|l| l.split_once(char::is_whitespace).is_none_or(|(_, f)| f.trim().trim_start_matches('*') != name))
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = writeln!(text, "{sha}  {name}");
        write_atomic(&sums, text.as_bytes())?;
        Ok(sha)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AdaptError> {
    let tmp = path.with_extension("tmp");
    let err = |err| AdaptError::Write { path: path.into(), err };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The pilot's faces as features, with their labels, and what was left out on the way.
pub struct Pilot {
    pub features: Vec<Vec<f32>>,
    pub labels: Vec<Emotion>,
    pub no_face: usize,
    pub unreadable: Vec<String>,
    pub skipped: usize,
    /// Crops `CropMode::Reframe` found no face in, read as given.
    pub as_given: usize,
}

impl Pilot {
    pub fn counts(&self) -> [usize; K] {
        let mut n = [0; K];
        for l in &self.labels {
            n[l.index()] += 1;
        }
        n
    }
}

/// Every face of `ds` through the firmware's crop path and the base model's encoder.
pub fn read_pilot(ds: &Dataset, base: &mut Base, mode: CropMode) -> Result<Pilot, AdaptError> {
    let mut cropper = Cropper::new(mode, base.input_size());
    let (features, labels, unreadable) = (Vec::new(), Vec::new(), Vec::new());
    let mut p = Pilot { features, labels, no_face: 0, unreadable, skipped: ds.skipped, as_given: 0 };
    for item in &ds.items {
        let cropped = cropper.crop(item, MienExpression::crop_box_for).map_err(|e| AdaptError::Pilot(e.to_string()))?;
        let Some(crop) = cropped else { continue };
        p.features.push(base.features(crop)?);
        p.labels.push(item.label);
    }
    let LeftOut { no_face, unreadable, as_given } = std::mem::take(&mut cropper.left_out);
    Ok(Pilot { no_face, unreadable, as_given, ..p })
}

/// Fit a head on `x` (features) and `y` (class indices), starting from and pulled towards `base`:
/// minimise the class-balanced mean cross-entropy + (lambda / 2) * |[W b] - [W0 b0]|^2, where
/// lambda = `strength` x (the mean squared norm of the features with a 1 appended) / 4, the curvature the
/// cross-entropy itself has at most; so `strength` means the same whatever the features' scale. The problem is
/// convex; Nesterov's accelerated gradient with step 1/L converges on it.
pub fn fit_head(x: &[&[f32]], y: &[usize], base: &Head, strength: f32) -> Head {
    let (n, d) = (x.len(), base.dim);
    let mut count = [0usize; K];
    for &c in y {
        count[c] += 1;
    }
    let present = count.iter().filter(|&&c| c > 0).count().max(1);
    // Each present class weighs the same in total.
    let cw: Vec<f32> = count.iter().map(|&c| if c > 0 { n as f32 / (present * c) as f32 } else { 0.0 }).collect();
    let sq: f32 = x.iter().map(|f| 1.0 + f.iter().map(|v| v * v).sum::<f32>()).sum::<f32>() / n.max(1) as f32;
    let lambda = strength * sq / 4.0;
    let wmax = cw.iter().copied().fold(0.0, f32::max);
    let step = 1.0 / (0.5 * sq * wmax + lambda);
    let p = K * (d + 1); // parameters: W row-major, then b
    let pack = |h: &Head| -> Vec<f32> { h.w.iter().chain(&h.b).copied().collect() };
    let theta0 = pack(base);
    let mut theta = theta0.clone();
    let mut prev = theta.clone();
    let mut grad = vec![0f32; p];
    let mut look = vec![0f32; p];
    let iters = 400;
    for t in 0..iters {
        // Nesterov: look ahead along the last step.
        let mom = t as f32 / (t as f32 + 3.0);
        for i in 0..p {
            look[i] = theta[i] + mom * (theta[i] - prev[i]);
        }
        for (i, g) in grad.iter_mut().enumerate() {
            *g = lambda * (look[i] - theta0[i]);
        }
        for (f, &c) in x.iter().zip(y) {
            let mut logit = [0f32; K];
            for (k, l) in logit.iter_mut().enumerate() {
                let row = &look[k * d..(k + 1) * d];
                *l = look[K * d + k] + row.iter().zip(f.iter()).map(|(w, v)| w * v).sum::<f32>();
            }
            let m = logit.iter().copied().fold(f32::MIN, f32::max);
            let z: f32 = logit.iter().map(|l| (l - m).exp()).sum();
            for k in 0..K {
                let pk = (logit[k] - m).exp() / z;
                let r = cw[c] * (pk - if k == c { 1.0 } else { 0.0 }) / n as f32;
                if r == 0.0 {
                    continue;
                }
                for (g, v) in grad[k * d..(k + 1) * d].iter_mut().zip(f.iter()) {
                    *g += r * v;
                }
                grad[K * d + k] += r;
            }
        }
        prev.copy_from_slice(&theta);
        for i in 0..p {
            theta[i] = look[i] - step * grad[i];
        }
    }
    Head { dim: d, w: theta[..K * d].to_vec(), b: theta[K * d..].to_vec() }
}

/// Fold of each face: each class's faces are dealt round the folds in a seeded order, so every fold holds its
/// share of every class (a class with fewer faces than folds is in some folds only).
pub fn folds(y: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let mut fold = vec![0; y.len()];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut offset = 0;
    for c in 0..K {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == c).collect();
        for i in (1..idx.len()).rev() {
            idx.swap(i, next() % (i + 1));
        }
        for (j, &i) in idx.iter().enumerate() {
            fold[i] = (offset + j) % k;
        }
        offset += idx.len();
    }
    fold
}

/// Cross-validated predictions of heads fitted with `strength`: each face is predicted by a head fitted on the
/// other folds.
pub fn cross_validate(p: &Pilot, base: &Head, strength: f32, k: usize) -> Metrics {
    let y: Vec<usize> = p.labels.iter().map(|e| e.index()).collect();
    let fold = folds(&y, k, 1);
    let mut m = Metrics::default();
    for f in 0..k {
        let train: Vec<usize> = (0..y.len()).filter(|&i| fold[i] != f).collect();
        if train.len() == y.len() {
            continue;
        }
        let xs: Vec<&[f32]> = train.iter().map(|&i| p.features[i].as_slice()).collect();
        let ys: Vec<usize> = train.iter().map(|&i| y[i]).collect();
        let head = fit_head(&xs, &ys, base, strength);
        for i in (0..y.len()).filter(|&i| fold[i] == f) {
            m.add(p.labels[i], head.predict(&p.features[i]));
        }
    }
    m
}

/// The outcome of a pilot: the shipped head's figures on the pilot faces, the cross-validated figures of each
/// strength, the strength chosen, and the head fitted with it on every pilot face.
pub struct Adapted {
    pub before: Metrics,
    pub tried: Vec<(f32, Metrics)>,
    pub strength: f32,
    pub folds: usize,
    pub head: Head,
}

impl Adapted {
    pub fn after(&self) -> &Metrics {
        &self.tried.iter().find(|(s, _)| *s == self.strength).expect("the chosen strength was tried").1
    }
}

/// Run the pilot: before/after figures by cross-validation, then the final head on every face. Of `strengths`,
/// the one with the best cross-validated macro-F1 is chosen (on a tie, the stronger pull: the smaller change).
pub fn adapt(p: &Pilot, base: &Head, strengths: &[f32]) -> Result<Adapted, AdaptError> {
    let counts = p.counts();
    let classes = counts.iter().filter(|&&c| c > 0).count();
    if classes < 2 || p.labels.len() < 4 {
        return Err(AdaptError::Pilot(format!(
            "{} faces of {classes} class(es): a pilot needs faces of at least 2 classes (5 or more of each advised)",
            p.labels.len()
        )));
    }
    let mut before = Metrics::default();
    for (f, &l) in p.features.iter().zip(&p.labels) {
        before.add(l, base.predict(f));
    }
    let k = 5.min(counts.iter().copied().max().unwrap_or(0)).max(2);
    let tried: Vec<(f32, Metrics)> = strengths.iter().map(|&s| (s, cross_validate(p, base, s, k))).collect();
    let best = tried
        .iter()
        .fold(None::<&(f32, Metrics)>, |b, t| match b {
            Some(b) if b.1.macro_f1() > t.1.macro_f1() + 1e-9 => Some(b),
            Some(b) if (b.1.macro_f1() - t.1.macro_f1()).abs() <= 1e-9 && b.0 > t.0 => Some(b),
            _ => Some(t),
        })
        .ok_or_else(|| AdaptError::Pilot("no strength to try".into()))?;
    let strength = best.0;
    let xs: Vec<&[f32]> = p.features.iter().map(|f| f.as_slice()).collect();
    let ys: Vec<usize> = p.labels.iter().map(|e| e.index()).collect();
    let head = fit_head(&xs, &ys, base, strength);
    Ok(Adapted { before, tried, strength, folds: k, head })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_head(d: usize) -> Head {
        Head { dim: d, w: vec![0.0; K * d], b: vec![0.0; K] }
    }

    #[test]
    fn fitted_head_learns_separable_classes_and_keeps_absent_ones() {
        // Two classes along two axes; the base head knows nothing (all zero) except a bias towards fear.
        let d = 4;
        let mut base = base_head(d);
        base.b[Emotion::Fear.index()] = 0.5;
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..20 {
            let t = i as f32 / 20.0;
            x.push(vec![2.0 + t, 0.1, 0.0, 0.3]);
            y.push(Emotion::Happiness.index());
            x.push(vec![0.1, 2.0 + t, 0.0, 0.3]);
            y.push(Emotion::Sadness.index());
        }
        let xs: Vec<&[f32]> = x.iter().map(|v| v.as_slice()).collect();
        let h = fit_head(&xs, &y, &base, 0.01);
        assert_eq!(h.predict(&[3.0, 0.0, 0.0, 0.3]), Emotion::Happiness);
        assert_eq!(h.predict(&[0.0, 3.0, 0.0, 0.3]), Emotion::Sadness);
        // A strong pull keeps the head near the base: fear's bias barely moves.
        let strong = fit_head(&xs, &y, &base, 100.0);
        assert!((strong.b[Emotion::Fear.index()] - 0.5).abs() < 0.05, "{:?}", strong.b);
        // The weak pull moved the weights more than the strong one.
        let dist = |h: &Head| h.w.iter().map(|v| v * v).sum::<f32>();
        assert!(dist(&h) > 10.0 * dist(&strong), "{} vs {}", dist(&h), dist(&strong));
    }

    #[test]
    fn folds_spread_every_class() {
        let y: Vec<usize> = (0..23).map(|i| if i < 15 { 0 } else if i < 21 { 3 } else { 7 }).collect();
        let f = folds(&y, 5, 1);
        for fold in 0..5 {
            let n0 = (0..y.len()).filter(|&i| y[i] == 0 && f[i] == fold).count();
            assert_eq!(n0, 3, "class 0 in fold {fold}");
        }
        for c in [3usize, 7] {
            let mut per = [0; 5];
            for i in (0..y.len()).filter(|&i| y[i] == c) {
                per[f[i]] += 1;
            }
            assert!(per.iter().all(|&n| n <= 2), "class {c}: {per:?}");
        }
        assert_eq!(f, folds(&y, 5, 1), "seeded");
    }

    #[test]
    fn the_encoder_and_head_give_the_models_own_logits() {
        use crate::expression::ExpressionClassifier;
        for file in ["models/mien_student_int8.onnx", "models/mien_student_fp32.onnx"] {
            let mut base = Base::open(Path::new(file)).unwrap();
            let mut model = MienExpression::load(Path::new(file)).unwrap();
            let mut crops = crate::expression::CropSet::new(1, 48, 48);
            let mut frame = crate::frame::Frame::new(64, 64);
            let mut slots = Vec::new();
            for seed in 0..4u32 {
                for (i, v) in frame.data.iter_mut().enumerate() {
                    *v = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed * 97) >> 13) as u8;
                }
                let whole = crate::frame::BBox { x0: 0.0, y0: 0.0, x1: 64.0, y1: 64.0 };
                crops.extract(&frame, std::iter::once(Some((&whole, 0.0))), |b| *b, 1, &mut slots).unwrap();
                let crop = crops.get(0);
                let f = base.features(crop).unwrap();
                let l = base.head.logits(&f);
                let e = model.classify(crop).unwrap();
                assert_eq!(Emotion::top(&l).0, e.label, "{file}");
                let m = l.iter().copied().fold(f32::MIN, f32::max);
                let p = 1.0 / l.iter().map(|v| (v - m).exp()).sum::<f32>();
                assert!((p - e.confidence).abs() < 1e-4, "{file}: {p} vs {}", e.confidence);
            }
        }
    }

    #[test]
    fn written_model_loads_with_its_new_head_and_a_checked_hash() {
        let dir = tempfile::tempdir().unwrap();
        let base = Base::open(Path::new("models/mien_student_int8.onnx")).unwrap();
        let mut h = base.head.clone();
        h.b[Emotion::Contempt.index()] += 100.0; // every face reads as contempt
        let out = dir.path().join("site.onnx");
        std::fs::write(dir.path().join("SHA256SUMS"), "abc  other.onnx\n").unwrap();
        let sha = base.write(&h, &[("from", base.sha256.clone())], &out).unwrap();
        let sums = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
        assert!(sums.contains("abc  other.onnx") && sums.contains(&format!("{sha}  site.onnx")), "{sums}");
        let again = Base::open(&out).unwrap();
        assert_eq!(again.head, h);
        // Rewriting replaces the line rather than adding one.
        base.write(&h, &[], &out).unwrap();
        let sums = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
        assert_eq!(sums.matches("site.onnx").count(), 1, "{sums}");
        let crop_side = 48;
        let mut m = MienExpression::load(&out).unwrap();
        let mut crops = crate::expression::CropSet::new(1, crop_side, crop_side);
        let frame = crate::frame::Frame::new(60, 60);
        let whole = crate::frame::BBox { x0: 0.0, y0: 0.0, x1: 60.0, y1: 60.0 };
        let mut slots = Vec::new();
        crops.extract(&frame, std::iter::once(Some((&whole, 0.0))), |b| *b, 1, &mut slots).unwrap();
        use crate::expression::ExpressionClassifier;
        assert_eq!(m.classify(crops.get(0)).unwrap().label, Emotion::Contempt);
        // A byte changed after writing is refused at load.
        let mut bytes = std::fs::read(&out).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&out, bytes).unwrap();
        assert!(MienExpression::load(&out).is_err());
    }
}
