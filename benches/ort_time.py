"""onnxruntime's time for one model on one thread, the baseline `examples/op_profile --ort PYTHON` compares tract
with in the same run (the same file, input shape and input values).

    models/.venv/bin/python benches/ort_time.py MODEL N,C,H,W RUNS

Prints `ort ms: X` (mean over RUNS after a warm-up). A fully convolutional model (the detector) runs at any input
size: the file's recorded intermediate shapes are dropped and its input set to the shape asked for. The venv:
`models/prepare.sh` (onnx, onnxruntime).
"""
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

path, shape, runs = sys.argv[1], [int(d) for d in sys.argv[2].split(",")], int(sys.argv[3])
m = onnx.load(path)
dims = m.graph.input[0].type.tensor_type.shape.dim
if [d.dim_value for d in dims] != shape:
    for d, v in zip(dims, shape):
        d.ClearField("dim_param")
        d.dim_value = v
    del m.graph.value_info[:]
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
n = int(np.prod(shape))
# The same input values as op_profile's: ((i * 7919) % 255) / 64 - 2.
x = (((np.arange(n, dtype=np.int64) * 7919) % 255).astype(np.float32) / 64.0 - 2.0).reshape(shape)
feed = {s.get_inputs()[0].name: x}
for _ in range(min(50, max(3, runs // 10))):
    s.run(None, feed)
t = time.perf_counter()
for _ in range(runs):
    s.run(None, feed)
print(f"ort ms: {(time.perf_counter() - t) * 1e3 / runs:.3f}")
