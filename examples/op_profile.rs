//! Where a model's time goes in tract, op by op (single thread, the firmware's loading path):
//!
//!     cargo run --release --example op_profile -- models/mien_student_int8.onnx models/mien_student_fp32.onnx
//!     cargo run --release --example op_profile -- --shape 1,3,784,1040 --runs 20 models/blazeface_short_range.onnx
//!
//! Each model runs `--runs` times (default 2000) after a warm-up on an input of `--shape` (default: the shape the
//! file declares; any other size for a fully convolutional model such as the detection pyramid's levels); every
//! node's eval is timed and the totals are printed per op type, most expensive first (`--nodes N` adds the N most
//! expensive single nodes, each with the kernel tract chose; `--baseline` profiles again with tract's own ops in
//! place of mien's (`model::use_own_ops`) and prints the ratio; `--ort PYTHON` times the same file, shape and input
//! in onnxruntime on one thread, `benches/ort_time.py` run by PYTHON, e.g. models/.venv/bin/python, and prints
//! tract/onnxruntime). Pin it to one core (`taskset -c 1`) so that both run on one. This is how models/README.md
//! explains why the int8 student is slower than its fp32 twin on x86.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

/// Profile one model; returns its wall time per run (ms).
fn profile(path: &str, shape: Option<&[usize]>, runs: usize, nodes: usize, quiet: bool) -> TractResult<f64> {
    let parsed = mien::model::Parsed::open(std::path::Path::new(path)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let shape: Vec<usize> = match shape {
        Some(s) => s.to_vec(),
        None => parsed.input().map_err(|e| anyhow::anyhow!("{e}"))?.1.into_iter().map(|d| d.unwrap_or(1)).collect(),
    };
    let model = parsed.runnable_for(&shape).map_err(|e| anyhow::anyhow!("{e}"))?;
    let input: Vec<f32> = (0..shape.iter().product::<usize>()).map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0).collect();
    let x = Tensor::from_shape(&shape, &input)?;
    let mut state = model.spawn()?;
    for _ in 0..50.min(runs.max(5)) {
        state.run(tvec!(x.clone().into()))?;
    }
    // Wall time per run, without the per-node clocks; then the breakdown.
    let t0 = Instant::now();
    for _ in 0..runs {
        state.run(tvec!(x.clone().into()))?;
    }
    let plain = t0.elapsed().as_secs_f64() * 1e3 / runs as f64;
    if quiet {
        return Ok(plain);
    }
    let mut per_op: BTreeMap<String, (Duration, usize)> = BTreeMap::new();
    let mut per_node: BTreeMap<(usize, String), Duration> = BTreeMap::new();
    let t0 = Instant::now();
    for _ in 0..runs {
        state.run_plan_with_eval(tvec!(x.clone().into()), |ctx, st, node, inputs| {
            let t = Instant::now();
            let out = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
            let e = per_op.entry(node.op().name().to_string()).or_default();
            let dt = t.elapsed();
            e.0 += dt;
            e.1 += 1;
            if nodes > 0 {
                let info = node.op().info().unwrap_or_default().join("; ");
                *per_node.entry((node.id, format!("{} ({}) {info}", node.name, node.op().name()))).or_default() += dt;
            }
            out
        })?;
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3 / runs as f64;
    let mut rows: Vec<_> = per_op.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.cmp(&a.1 .0));
    let total: f64 = rows.iter().map(|r| r.1 .0.as_secs_f64()).sum::<f64>() * 1e3 / runs as f64;
    let n = model.model().nodes().len();
    println!("{path} {shape:?}: {plain:.3} ms per run; profiled {wall:.3} ms ({total:.3} ms inside ops), {n} nodes");
    for (op, (d, n)) in rows {
        let ms = d.as_secs_f64() * 1e3 / runs as f64;
        println!("  {op:<28} {:>4} nodes {ms:>8.3} ms {:>5.1}%", n / runs, 100.0 * ms / total);
    }
    if nodes > 0 {
        let mut rows: Vec<_> = per_node.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1));
        println!("  the {nodes} most expensive nodes:");
        for ((_, name), d) in rows.into_iter().take(nodes) {
            println!("    {:>8.3} ms  {name}", d.as_secs_f64() * 1e3 / runs as f64);
        }
    }
    Ok(plain)
}

/// onnxruntime's time for the same file, shape and input values, one thread (`benches/ort_time.py`).
fn ort_time(python: &str, path: &str, shape: Option<&[usize]>, runs: usize) -> TractResult<f64> {
    let shape: Vec<usize> = match shape {
        Some(s) => s.to_vec(),
        None => mien::model::Parsed::open(std::path::Path::new(path))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .input()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .1
            .into_iter()
            .map(|d| d.unwrap_or(1))
            .collect(),
    };
    let dims = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ort_time.py");
    let out = std::process::Command::new(python).args([script, path, &dims, &runs.to_string()]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("ort ms: ")?.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{python} {script}: {text}{}", String::from_utf8_lossy(&out.stderr)))
}

fn main() -> TractResult<()> {
    // As the firmware runs (mien calls it at start): freed activations stay on the heap.
    mien::model::keep_freed_memory();
    let mut runs = 2000;
    let mut nodes = 0;
    let mut paths = Vec::new();
    let mut shape: Option<Vec<usize>> = None;
    let mut baseline = false;
    let mut ort: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N");
        } else if a == "--shape" {
            let v = args.next().expect("--shape N,C,H,W");
            shape = Some(v.split(',').map(|d| d.trim().parse().expect("--shape: numbers")).collect());
        } else if a == "--baseline" {
            baseline = true;
        } else if a == "--ort" {
            ort = Some(args.next().expect("--ort PYTHON (with onnxruntime: models/.venv/bin/python)"));
        } else if a == "--nodes" {
            nodes = args.next().and_then(|v| v.parse().ok()).expect("--nodes N");
        } else {
            paths.push(a);
        }
    }
    if paths.is_empty() {
        paths = vec!["models/mien_student_int8.onnx".into(), "models/mien_student_fp32.onnx".into()];
    }
    for p in &paths {
        let mut ours = profile(p, shape.as_deref(), runs, nodes, false)?;
        if baseline {
            // Alternated, best of two each: the first model in a process pays for fresh memory.
            mien::model::use_own_ops(false);
            println!("baseline, tract's own ops only:");
            let mut theirs = profile(p, shape.as_deref(), runs, nodes, false)?;
            mien::model::use_own_ops(true);
            ours = ours.min(profile(p, shape.as_deref(), runs, nodes, true)?);
            mien::model::use_own_ops(false);
            theirs = theirs.min(profile(p, shape.as_deref(), runs, nodes, true)?);
            mien::model::use_own_ops(true);
            println!("{p}: with mien's ops {ours:.3} ms, tract's alone {theirs:.3} ms: {:.2}x", theirs / ours);
        }
        if let Some(py) = &ort {
            let ort_ms = ort_time(py, p, shape.as_deref(), runs)?;
            let r = ours / ort_ms;
            println!("{p}: tract (mien's loading path) {ours:.3} ms, onnxruntime {ort_ms:.3} ms: tract/onnxruntime {r:.2}x");
        }
    }
    Ok(())
}
