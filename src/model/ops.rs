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

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::{Pad, PadMode};
use tract_onnx::tract_core::ops::cnn::MaxPool;
use tract_onnx::tract_core::ops::nn::DataFormat;

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
        let view = input.try_as_plain_ram()?;
        let src = view.as_slice::<f32>()?;
        let mut out = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        {
            let mut plain = out.try_as_plain_ram_mut()?;
            pad_runs(src, &shape, &self.pads, self.value(), plain.as_slice_mut::<f32>()?);
        }
        Ok(tvec!(out.into_tvalue()))
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
        let view = input.try_as_plain_ram()?;
        let src = view.as_slice::<f32>()?;
        let mut out = unsafe { Tensor::uninitialized::<f32>(&[shape[0], shape[1], h / 2, w / 2])? };
        {
            let mut plain = out.try_as_plain_ram_mut()?;
            let dst = plain.as_slice_mut::<f32>()?;
            // Each pair of input rows makes one output row.
            for (rows, o) in src.chunks_exact(2 * w).zip(dst.chunks_exact_mut(w / 2)) {
                let (a, b) = rows.split_at(w);
                for ((o, a), b) in o.iter_mut().zip(a.chunks_exact(2)).zip(b.chunks_exact(2)) {
                    *o = a[0].max(a[1]).max(b[0].max(b[1]));
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
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

/// Write `src` (row-major, `shape`) padded by `pads` with `value` into `out` (row-major, the padded shape). Every
/// element of `out` is written once.
fn pad_runs(src: &[f32], shape: &[usize], pads: &[(usize, usize)], value: f32, out: &mut [f32]) {
    // Axes after the last padded one stay whole: with that axis they make one contiguous run per outer index.
    let Some(k) = pads.iter().rposition(|&(a, b)| a + b > 0) else {
        out.copy_from_slice(src);
        return;
    };
    let inner: usize = shape[k + 1..].iter().product();
    let run = shape[k] * inner; // contiguous_run
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
pub fn swap_in_decluttered(model: &mut TypedModel) -> TractResult<usize> {
    let mut swapped = 0;
    for id in 0..model.nodes().len() {
        if is_plain_max_pool_2x2(model, id)? {
            model.node_mut(id).op = Box::new(MaxPool2x2);
            swapped += 1;
        }
    }
    Ok(swapped)
}

/// Under this many elements per copied run (a spatial pad's runs are rows) tract's `Pad` is as fast: on the
/// expression student's 48-wide rows `RunPad` took twice its time.
const MIN_RUN: usize = 4096;

/// How many elements of the input stay together in the output: the last padded axis and every axis after it.
fn contiguous_run(shape: &[usize], pads: &[(usize, usize)]) -> usize {
    match pads.iter().rposition(|&(a, b)| a + b > 0) {
        Some(k) => shape[k..].iter().product(),
        None => shape.iter().product(),
    }
}

/// Swap mien's pad in for tract's in an optimized model (after tract has folded what pads it can into
/// convolutions): every constant `Pad` of an f32 tensor whose copied runs are long (channel padding).
pub fn swap_in_optimized(model: &mut TypedModel) -> TractResult<usize> {
    let mut swapped = 0;
    for id in 0..model.nodes().len() {
        let Some(pad) = model.node(id).op_as::<Pad>() else { continue };
        let PadMode::Constant(v) = &pad.mode else { continue };
        let input = model.outlet_fact(model.node(id).inputs[0])?;
        let Some(shape) = input.shape.as_concrete() else { continue };
        if input.datum_type != f32::datum_type() || contiguous_run(shape, &pad.pads) < MIN_RUN {
            continue;
        }
        let op = RunPad { pads: pad.pads.clone(), value: v.cast_to_scalar::<f32>()?.to_bits() };
        model.node_mut(id).op = Box::new(op);
        swapped += 1;
    }
    Ok(swapped)
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

    /// The shipped detector at a pyramid level's size gives the same outputs with mien's ops as with tract's alone,
    /// and the ops are in its plan.
    #[test]
    fn the_detector_runs_the_same_with_mien_ops() {
        let parsed = crate::model::Parsed::open(std::path::Path::new("models/blazeface_short_range.onnx")).unwrap();
        let shape = [1, 3, 208, 272];
        let n: usize = shape.iter().product();
        let input: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0).collect();
        let ours = parsed.runnable_for_ops(&shape, true).unwrap();
        let theirs = parsed.runnable_for_ops(&shape, false).unwrap();
        let names: Vec<String> = ours.model().nodes().iter().map(|n| n.op().name().to_string()).collect();
        assert!(names.iter().any(|n| n == "RunPad") && names.iter().any(|n| n == "MaxPool2x2"), "{names:?}");
        let run = |m| crate::model::run_f32(m, &shape, &input).unwrap();
        let (a, b) = (run(&ours), run(&theirs));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (crate::model::output_f32(x).unwrap(), crate::model::output_f32(y).unwrap());
            assert_eq!(x.len(), y.len());
            let worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-4, "outputs differ by {worst}");
        }
    }
}
