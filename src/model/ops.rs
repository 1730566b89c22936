//! Ops mien swaps into tract's optimized graphs where tract's own are slow on what mien runs, each checked
//! against tract's result in the tests below.
//!
//! `RunPad`: a constant `Pad` as block copies. tract 0.23's `Pad` fills the whole output, then assigns the input
//! through an n-dimensional ndarray slice, element by element. BlazeFace pads channels before each residual add
//! that widens them: on the pyramid's 1040x784 level that was 28 ms of a 200 ms run (`examples/op_profile`). Here
//! each run of the input that stays contiguous in the output (for NCHW channel padding: the whole input) is one
//! copy, and only the padding is filled.
//!
//! `MaxPool2x2`: a 2x2 max-pool of stride 2 over NCHW f32 planes of even height and width (no padding). tract 0.23
//! has a vector path for stride 1 only; at stride 2 it visits each window with bounds checks. BlazeFace halves
//! its skip branch this way at each stride-2 block: 17.7 ms of the same 200 ms run.
//!
//! `Upsample2x`: a 2x upsample of NCHW f32 planes, nearest (each pixel repeated 2x2) or bilinear with half-pixel
//! centres (each output pixel 3/4 of its nearest input pixel and 1/4 of the next one out, per axis; what the
//! full-range BlazeFace's three `Resize` ops do), for a `Resize` that computes the same (checked at load: tract's op
//! and this one on the same probe input). tract computes each output pixel's source coordinates and weights: 16%
//! of the full-range detector's time.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::{Pad, PadMode};
use tract_onnx::tract_core::ops::cnn::MaxPool;
use tract_onnx::tract_core::ops::nn::DataFormat;

/// A new f32 tensor of `shape`, every element written by `fill` from `input`'s f32 elements (row-major).
fn f32_out(input: &TValue, shape: &[usize], fill: impl FnOnce(&[f32], &mut [f32])) -> TractResult<TVec<TValue>> {
    let view = input.try_as_plain_ram()?;
    let mut out = unsafe { Tensor::uninitialized::<f32>(shape)? };
    {
        let mut plain = out.try_as_plain_ram_mut()?;
        fill(view.as_slice::<f32>()?, plain.as_slice_mut::<f32>()?);
    }
    Ok(tvec!(out.into_tvalue()))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunPad {
    pads: Vec<(usize, usize)>,
    /// The fill value's bits (f32), so that the op stays `Eq` and `Hash`.
    value: u32,
}

impl RunPad {
    fn value(&self) -> f32 {
        f32::from_bits(self.value)
    }
}

impl Op for RunPad {
    fn name(&self) -> StaticName {
        "RunPad".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("pads: {:?}, value {}", self.pads, self.value())])
    }

    op_as_typed_op!();
}

impl EvalOp for RunPad {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape().to_vec();
        ensure!(shape.len() == self.pads.len(), "RunPad: input of rank {}, pads {:?}", shape.len(), self.pads);
        let out_shape: Vec<usize> = shape.iter().zip(&self.pads).map(|(d, (a, b))| d + a + b).collect();
        f32_out(&input, &out_shape, |src, out| pad_runs(src, &shape, &self.pads, self.value(), out))
    }
}

impl TypedOp for RunPad {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut fact = inputs[0].without_value();
        ensure!(self.pads.len() == fact.rank(), "RunPad: input of rank {}, pads {:?}", fact.rank(), self.pads);
        for (ix, (b, e)) in self.pads.iter().enumerate() {
            fact.shape.set(ix, fact.shape[ix].clone() + *b + *e);
        }
        Ok(tvec!(fact))
    }

    as_op!();
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaxPool2x2;

impl Op for MaxPool2x2 {
    fn name(&self) -> StaticName {
        "MaxPool2x2".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape().to_vec();
        ensure!(shape.len() == 4 && shape[2] % 2 == 0 && shape[3] % 2 == 0, "MaxPool2x2: input {shape:?}");
        let (h, w) = (shape[2], shape[3]);
        f32_out(&input, &[shape[0], shape[1], h / 2, w / 2], |src, dst| {
            // Each pair of input rows makes one output row.
            for (rows, o) in src.chunks_exact(2 * w).zip(dst.chunks_exact_mut(w / 2)) {
                let (a, b) = rows.split_at(w);
                for ((o, a), b) in o.iter_mut().zip(a.chunks_exact(2)).zip(b.chunks_exact(2)) {
                    *o = a[0].max(a[1]).max(b[0].max(b[1]));
                }
            }
        })
    }
}

impl TypedOp for MaxPool2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut fact = inputs[0].without_value();
        ensure!(fact.rank() == 4, "MaxPool2x2: input of rank {}", fact.rank());
        for ix in [2, 3] {
            fact.shape.set(ix, fact.shape[ix].clone() / 2);
        }
        Ok(tvec!(fact))
    }

    as_op!();
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upsample2x {
    /// Bilinear with half-pixel centres; nearest otherwise.
    linear: bool,
}

impl Op for Upsample2x {
    fn name(&self) -> StaticName {
        "Upsample2x".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![if self.linear { "bilinear, half-pixel".into() } else { "nearest".into() }])
    }

    op_as_typed_op!();
}

impl EvalOp for Upsample2x {
    op_out_of_plan!();

    /// The first input is the image; the `Resize` node's other inputs (its constant scales or sizes) are ignored.
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let shape = input.shape().to_vec();
        ensure!(shape.len() == 4 && shape[2] > 0 && shape[3] > 0, "Upsample2x: input {shape:?}");
        let (h, w) = (shape[2], shape[3]);
        f32_out(input, &[shape[0], shape[1], h * 2, w * 2], |src, dst| {
            if self.linear {
                let mut rows = vec![0f32; h * 2 * w]; // the plane widened, before the rows are doubled
                for (plane, o) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(4 * h * w)) {
                    for (row, wide) in plane.chunks_exact(w).zip(rows.chunks_exact_mut(2 * w)) {
                        double_linear(row, wide);
                    }
                    // Then each pair of output rows: 3/4 of its widened row and 1/4 of the one above or below.
                    let wide = |r: usize| &rows[r * 2 * w..(r + 1) * 2 * w];
                    for (r, pair) in o.chunks_exact_mut(4 * w).enumerate() {
                        let (c, up, down) = (wide(r), wide(r.saturating_sub(1)), wide((r + 1).min(h - 1)));
                        let (top, bottom) = pair.split_at_mut(2 * w);
                        for (((t, b), &c), (&u, &d)) in top.iter_mut().zip(bottom).zip(c).zip(up.iter().zip(down)) {
                            *t = 0.75 * c + 0.25 * u;
                            *b = 0.75 * c + 0.25 * d;
                        }
                    }
                }
            } else {
                for (row, o) in src.chunks_exact(w).zip(dst.chunks_exact_mut(4 * w)) {
                    let (first, second) = o.split_at_mut(2 * w);
                    for (pair, &v) in first.chunks_exact_mut(2).zip(row) {
                        pair[0] = v;
                        pair[1] = v;
                    }
                    second.copy_from_slice(first);
                }
            }
        })
    }
}

/// One row doubled, bilinear with half-pixel centres: output 2k is 3/4 of input k and 1/4 of input k-1, output
/// 2k+1 3/4 of k and 1/4 of k+1 (the ends clamped).
fn double_linear(row: &[f32], out: &mut [f32]) {
    let n = row.len();
    for k in 0..n {
        let (c, l, r) = (row[k], row[k.saturating_sub(1)], row[(k + 1).min(n - 1)]);
        out[2 * k] = 0.75 * c + 0.25 * l;
        out[2 * k + 1] = 0.75 * c + 0.25 * r;
    }
}

impl TypedOp for Upsample2x {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut fact = inputs[0].without_value();
        ensure!(fact.rank() == 4, "Upsample2x: input of rank {}", fact.rank());
        for ix in [2, 3] {
            fact.shape.set(ix, fact.shape[ix].clone() * 2);
        }
        Ok(tvec!(fact))
    }

    as_op!();
}

/// The `Upsample2x` that computes what node `id`, a `Resize`, does: f32 NCHW in, height and width doubled out, its
/// other inputs constant, and tract's op and `Upsample2x` giving the same output on a probe input of its shape.
fn upsample_2x_for(model: &TypedModel, id: usize) -> TractResult<Option<Upsample2x>> {
    let node = model.node(id);
    if node.op().name() != "Resize" || node.outputs.len() != 1 {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let (Some(i), Some(o)) = (input.shape.as_concrete(), node.outputs[0].fact.shape.as_concrete()) else {
        return Ok(None);
    };
    if input.datum_type != f32::datum_type() || i.len() != 4 || o != [i[0], i[1], i[2] * 2, i[3] * 2] {
        return Ok(None);
    }
    let n: usize = i.iter().product();
    let probe = Tensor::from_shape(i, &(0..n).map(|k| ((k * 7919) % 1013) as f32).collect::<Vec<_>>())?;
    let mut inputs = tvec!(probe.into_tvalue());
    for &extra in &node.inputs[1..] {
        let Some(k) = model.outlet_fact(extra)?.konst.clone() else { return Ok(None) };
        inputs.push(k.into_tensor().into_tvalue());
    }
    let Some(theirs) = node.op.eval_out_of_plan(inputs.clone())? else { return Ok(None) };
    for op in [Upsample2x { linear: false }, Upsample2x { linear: true }] {
        let ours = op.eval(&EvalContext::out_of_plan(), inputs.clone())?;
        let (a, b) = (theirs[0].try_as_plain_ram()?, ours[0].try_as_plain_ram()?);
        let (a, b) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
        // The same up to float rounding (the weights are summed in another order).
        let close = a.iter().zip(b).all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + p.abs()));
        if theirs[0].shape() == ours[0].shape() && close {
            return Ok(Some(op));
        }
    }
    Ok(None)
}

/// Write `src` (row-major, `shape`) padded by `pads` with `value` into `out` (row-major, the padded shape). Every
/// element of `out` is written once.
fn pad_runs(src: &[f32], shape: &[usize], pads: &[(usize, usize)], value: f32, out: &mut [f32]) {
    // Axes after the last padded one stay whole: with that axis they make one contiguous run per outer index.
    let Some(k) = last_padded(pads) else {
        out.copy_from_slice(src);
        return;
    };
    let inner: usize = shape[k + 1..].iter().product();
    let run = shape[k] * inner; // contiguous_run(shape, pads)
    let (before, after) = (pads[k].0 * inner, pads[k].1 * inner);
    let block = before + run + after;
    let out_outer: Vec<usize> = shape[..k].iter().zip(pads).map(|(d, (a, b))| d + a + b).collect();
    let mut idx = vec![0usize; k]; // output index over the outer axes
    let (mut o, mut s) = (0usize, 0usize);
    loop {
        let inside = idx.iter().zip(pads).zip(shape).all(|((&i, &(a, _)), &d)| i >= a && i < a + d);
        if inside {
            out[o..o + before].fill(value);
            out[o + before..o + before + run].copy_from_slice(&src[s..s + run]);
            out[o + before + run..o + block].fill(value);
            s += run; // the input's runs come in order: the inside indices walk it row-major
        } else {
            out[o..o + block].fill(value);
        }
        o += block;
        // Next outer index (odometer, last axis fastest).
        let mut ax = k;
        loop {
            if ax == 0 {
                debug_assert_eq!((o, s), (out.len(), src.len()));
                return;
            }
            ax -= 1;
            idx[ax] += 1;
            if idx[ax] < out_outer[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

/// Swap mien's max-pool in for tract's in a decluttered model (tract's optimized max-pool is not public): every
/// 2x2 stride-2 max-pool of even-sized NCHW f32 planes.
pub fn swap_in_decluttered(model: &mut TypedModel) -> TractResult<()> {
    for id in 0..model.nodes().len() {
        if is_plain_max_pool_2x2(model, id)? {
            model.node_mut(id).op = Box::new(MaxPool2x2);
        }
    }
    Ok(())
}

/// Under this many elements per copied run (a spatial pad's runs are rows) tract's `Pad` is as fast: on the
/// expression student's 48-wide rows `RunPad` took twice its time.
const MIN_RUN: usize = 4096;

/// The last axis with any padding.
fn last_padded(pads: &[(usize, usize)]) -> Option<usize> {
    pads.iter().rposition(|&(a, b)| a + b > 0)
}

/// How many elements of the input stay together in the output: the last padded axis and every axis after it.
fn contiguous_run(shape: &[usize], pads: &[(usize, usize)]) -> usize {
    match last_padded(pads) {
        Some(k) => shape[k..].iter().product(),
        None => shape.iter().product(),
    }
}

/// Swap mien's pad and upsample in for tract's in an optimized model (after tract has folded what pads it can
/// into convolutions): every constant `Pad` of an f32 tensor whose copied runs are long (channel padding), every
/// `Resize` that `Upsample2x` computes (a 2x upsample, nearest or bilinear with half-pixel centres).
pub fn swap_in_optimized(model: &mut TypedModel) -> TractResult<()> {
    for id in 0..model.nodes().len() {
        if let Some(op) = upsample_2x_for(model, id)? {
            model.node_mut(id).op = Box::new(op);
            continue;
        }
        let Some(pad) = model.node(id).op_as::<Pad>() else { continue };
        let PadMode::Constant(v) = &pad.mode else { continue };
        let input = model.outlet_fact(model.node(id).inputs[0])?;
        let Some(shape) = input.shape.as_concrete() else { continue };
        if input.datum_type != f32::datum_type() || contiguous_run(shape, &pad.pads) < MIN_RUN {
            continue;
        }
        let op = RunPad { pads: pad.pads.clone(), value: v.cast_to_scalar::<f32>()?.to_bits() };
        model.node_mut(id).op = Box::new(op);
    }
    Ok(())
}

/// A max-pool node `MaxPool2x2` computes exactly: f32 NCHW, 2x2 windows at stride 2, no dilation, no index
/// output, and an input of known even height and width whose output is exactly half of it (no padding).
fn is_plain_max_pool_2x2(model: &TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(pool) = node.op_as::<MaxPool>() else { return Ok(false) };
    let spec = &pool.pool_spec;
    if pool.with_index_outputs.is_some() {
        return Ok(false);
    }
    let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|d| d.iter().all(|&x| x == 1));
    if spec.data_format != DataFormat::NCHW
        || spec.kernel_shape[..] != [2, 2]
        || spec.strides.as_deref() != Some(&[2, 2][..])
        || !ones(&spec.dilations)
        || node.outputs.len() != 1
    {
        return Ok(false);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let output = &node.outputs[0].fact;
    let (Some(i), Some(o)) = (input.shape.as_concrete(), output.shape.as_concrete()) else { return Ok(false) };
    Ok(input.datum_type == f32::datum_type()
        && i.len() == 4
        && i[2] % 2 == 0
        && i[3] % 2 == 0
        && o == [i[0], i[1], i[2] / 2, i[3] / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tract's own `Pad` against `RunPad` on the same input.
    fn both(shape: &[usize], pads: &[(usize, usize)], value: f32) -> (Tensor, Tensor) {
        let n: usize = shape.iter().product();
        let input = Tensor::from_shape(shape, &(0..n).map(|i| i as f32 * 0.5 - 3.0).collect::<Vec<_>>()).unwrap();
        let theirs = Pad { pads: pads.to_vec(), mode: PadMode::Constant(Arc::new(value.into())) };
        let ours = RunPad { pads: pads.to_vec(), value: value.to_bits() };
        let run = |op: &dyn EvalOp| {
            op.eval_out_of_plan(tvec!(input.clone().into_tvalue())).unwrap().unwrap().remove(0).into_tensor()
        };
        (run(&theirs), run(&ours))
    }

    #[test]
    fn run_pad_equals_tracts_pad() {
        let cases: &[(&[usize], &[(usize, usize)])] = &[
            (&[1, 24, 7, 9], &[(0, 0), (0, 4), (0, 0), (0, 0)]), // BlazeFace's channel padding
            (&[2, 3, 4, 5], &[(0, 0), (2, 1), (0, 0), (0, 0)]),
            (&[2, 3, 4, 5], &[(1, 2), (0, 1), (3, 0), (1, 1)]),
            (&[2, 3, 4, 5], &[(0, 0), (0, 0), (0, 0), (2, 3)]),
            (&[3, 4], &[(0, 0), (0, 0)]),
            (&[5], &[(2, 7)]),
            (&[1, 1, 1], &[(1, 1), (1, 1), (1, 1)]),
        ];
        for (shape, pads) in cases {
            for value in [0.0, -1.5] {
                let (theirs, ours) = both(shape, pads, value);
                assert_eq!(theirs.shape(), ours.shape(), "{shape:?} {pads:?}");
                assert_eq!(
                    theirs.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
                    ours.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
                    "{shape:?} {pads:?} {value}"
                );
            }
        }
    }
    #[test]
    fn max_pool_2x2_equals_tracts() {
        use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
        for shape in [[1usize, 3, 4, 6], [2, 5, 8, 2], [1, 28, 10, 14]] {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 263) as f32 - 130.0).collect();
            let input = Tensor::from_shape(&shape, &v).unwrap();
            let spec = PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![2, 2],
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: Some(tvec![2, 2]),
                input_channels: shape[1],
                output_channels: shape[1],
            };
            let theirs = MaxPool { pool_spec: spec, with_index_outputs: None };
            let run = |op: &dyn EvalOp| {
                op.eval_out_of_plan(tvec!(input.clone().into_tvalue())).unwrap().unwrap().remove(0).into_tensor()
            };
            let (a, b) = (run(&theirs), run(&MaxPool2x2));
            assert_eq!(a.shape(), b.shape());
            let slice = |t: &Tensor| t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
            assert_eq!(slice(&a), slice(&b));
        }
    }

    /// A shipped model gives the same outputs with mien's ops as with tract's alone, and `expect` are in its plan.
    fn same_with_mien_ops(path: &str, shape: &[usize], expect: &[&str]) {
        let parsed = crate::model::Parsed::open(std::path::Path::new(path)).unwrap();
        let n: usize = shape.iter().product();
        let input: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0).collect();
        let ours = parsed.runnable_for_ops(shape, true).unwrap();
        let theirs = parsed.runnable_for_ops(shape, false).unwrap();
        let names: Vec<String> = ours.model().nodes().iter().map(|n| n.op().name().to_string()).collect();
        for e in expect {
            assert!(names.iter().any(|n| n == e), "{path}: no {e} in {names:?}");
        }
        let run = |m| crate::model::run_f32(m, shape, &input).unwrap();
        let (a, b) = (run(&ours), run(&theirs));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (crate::model::output_f32(x).unwrap(), crate::model::output_f32(y).unwrap());
            assert_eq!(x.len(), y.len());
            let worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-4, "{path}: outputs differ by {worst}");
        }
    }

    #[test]
    fn the_detectors_run_the_same_with_mien_ops() {
        same_with_mien_ops("models/blazeface_short_range.onnx", &[1, 3, 208, 272], &["RunPad", "MaxPool2x2"]);
        let all = ["RunPad", "MaxPool2x2", "Upsample2x"];
        same_with_mien_ops("models/blazeface_full_range.onnx", &[1, 3, 192, 192], &all);
    }

    #[test]
    fn upsample_2x_nearest_repeats_pixels_and_linear_weighs_three_to_one() {
        let input = Tensor::from_shape(&[1, 2, 2, 3], &[1f32, 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.]).unwrap();
        let nearest = Upsample2x { linear: false };
        let out = nearest.eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue())).unwrap().remove(0);
        assert_eq!(out.shape(), &[1, 2, 4, 6]);
        let v = out.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        assert_eq!(&v[..12], &[1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.]);
        assert_eq!(&v[36..], &[10., 10., 11., 11., 12., 12., 10., 10., 11., 11., 12., 12.]);
        // Bilinear, half-pixel centres: a row [a, b] becomes [a, 3a/4 + b/4, a/4 + 3b/4, b], twice.
        let input = Tensor::from_shape(&[1, 1, 1, 2], &[4f32, 8.]).unwrap();
        let linear = Upsample2x { linear: true };
        let out = linear.eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue())).unwrap().remove(0);
        let v = out.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        assert_eq!(v, [4., 5., 7., 8., 4., 5., 7., 8.]);
    }
}
