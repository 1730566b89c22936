//! Where a model's time goes in tract, op by op (single thread, the firmware's loading path):
//!
//!     cargo run --release --example op_profile -- models/mien_student_int8.onnx models/mien_student_fp32.onnx
//!
//! Each model runs `--runs` times (default 2000) on a 1x1x48x48 input after a warm-up; every node's eval is
//! timed and the totals are printed per op type, most expensive first (`--nodes N` adds the N most expensive
//! single nodes, each with the kernel tract chose). This is how models/README.md explains why the int8 student
//! is slower than its fp32 twin on x86.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

fn profile(path: &str, runs: usize, nodes: usize) -> TractResult<()> {
    let shape = [1usize, 1, 48, 48];
    let (model, _) = mien::model::load_f32(std::path::Path::new(path), &shape).map_err(|e| anyhow::anyhow!("{e}"))?;
    let input: Vec<f32> = (0..48 * 48).map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0).collect();
    let x = Tensor::from_shape(&shape, &input)?;
    let mut state = model.spawn()?;
    for _ in 0..50 {
        state.run(tvec!(x.clone().into()))?;
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
    println!("{path}: {wall:.3} ms per run ({total:.3} ms inside ops), {} nodes", model.model().nodes().len());
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
    Ok(())
}

fn main() -> TractResult<()> {
    let mut runs = 2000;
    let mut nodes = 0;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N");
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
        profile(p, runs, nodes)?;
    }
    Ok(())
}
