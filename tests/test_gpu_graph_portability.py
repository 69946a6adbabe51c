"""What the GPU engines load, checked without a GPU: the derived graphs (advance with budgets,
changed_at and last, readout) that ort-cuda and trt build from an exported step, at every supported
opset. TensorRT's ONNX parser and ONNX Runtime's CUDA kernels both take the operators below; no
shape arithmetic (Shape/Gather/ConstantOfShape/Reshape) that would put nodes on the CPU, which
would also forbid CUDA graphs in ONNX Runtime; every Slice/Reduce parameter is a constant; only
float32 and bool flow between nodes (int64 appears only as constant Slice/Reduce parameters)."""
import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from sead.export.exporter import export_checkpoint  # noqa: E402
from sead.runtime.engines.ort import K_CHOICES  # noqa: E402
from sead.runtime.graph import advance_graph, readout_graph  # noqa: E402
from sead.runtime.model_file import load_step_model  # noqa: E402

# TensorRT 10 ONNX parser and ONNX Runtime CUDA EP both implement these (for float/bool inputs)
GPU_OPS = {"Add", "Concat", "Conv", "Greater", "Mul", "ReduceL1", "ReduceMax", "Relu", "Slice", "Sub", "Where"}
CONSTANT_INPUTS = {"Slice": (1, 2, 3, 4), "ReduceMax": (1,), "ReduceL1": (1,)}  # inputs that must be initializers
FLOWING_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL}


@pytest.fixture(scope="module", params=[17, 18, 21])
def step(request, tiny_checkpoints, tmp_path_factory):
    out, _ = export_checkpoint(tiny_checkpoints["addition"], tmp_path_factory.mktemp("gpu") / "a.onnx",
                               opset=request.param)
    return load_step_model(out)


def _graphs(step):
    yield "readout", readout_graph(step)
    for k in K_CHOICES:
        yield f"advance K={k}", advance_graph(step, k)


def test_whole_ring_rows_use_the_same_operators(tiny_checkpoints, tmp_path):
    out, _ = export_checkpoint(tiny_checkpoints["rule110"], tmp_path / "r.onnx")
    ring = load_step_model(out)
    for k in (1, 8):
        assert {n.op_type for n in advance_graph(ring, k, wrap=True).graph.node} <= GPU_OPS


def test_derived_graphs_use_only_gpu_operators_and_constant_parameters(step):
    for label, model in _graphs(step):
        onnx.checker.check_model(model, full_check=True)
        initializers = {t.name for t in model.graph.initializer}
        for node in model.graph.node:
            assert node.op_type in GPU_OPS, f"{label}: {node.op_type} is not in the GPU operator set"
            for i in CONSTANT_INPUTS.get(node.op_type, ()):
                if i < len(node.input) and node.input[i]:
                    assert node.input[i] in initializers, f"{label}: {node.op_type} input {i} is computed"
            if node.op_type == "Cast":
                to = next(a.i for a in node.attribute if a.name == "to")
                assert to in FLOWING_TYPES, f"{label}: Cast to {onnx.TensorProto.DataType.Name(to)}"
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            assert value.type.tensor_type.elem_type in FLOWING_TYPES, f"{label}: {value.name} is not float or bool"
        if label.startswith("advance"):
            budget = next(i for i in model.graph.input if i.name == "budget")
            assert [d.dim_param or d.dim_value for d in budget.type.tensor_type.shape.dim] == ["batch", 1, 1]


def test_derived_graphs_keep_every_node_on_one_provider(step, tmp_path):
    """ONNX Runtime's CUDA graphs need every node on the CUDA provider. No GPU here, so check the
    proxy that decides it: after ONNX Runtime's own optimizations, the graph still holds only the
    operator set above and no node that reads a shape."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # provider-neutral rewrites
    for label, model in _graphs(step):
        path = str(tmp_path / f"{label.replace(' ', '').replace('=', '')}.onnx")
        opts.optimized_model_filepath = path
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(path)
        ops = {n.op_type for n in optimized.graph.node}
        assert ops <= GPU_OPS, f"{label}: ONNX Runtime rewrote into {ops - GPU_OPS}"
