"""Engine 'trt' on a machine without TensorRT: a clear EngineUnavailable with the pip hint, and
'auto' falls back to another engine. (The GPU path is exercised by bench/gpu_check.py.)"""
import sys
import types

import pytest

from sead.runtime.errors import EngineUnavailable

torch = pytest.importorskip("torch")

from sead.export.onnx_step import build_step_graph, metadata_for  # noqa: E402
from sead.runtime.model_file import load_step_model  # noqa: E402
from sead.train.model import SEAD, ModelConfig  # noqa: E402

HINT = "engine 'trt' needs TensorRT and a CUDA GPU: pip install 'sead[tensorrt]'"


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    torch.manual_seed(0)
    model = SEAD(ModelConfig(task="rule110", input_channels=3, classes=2, boundary="ring"))
    proto = build_step_graph(model, metadata_for(model, {}, "x" * 64, "0"))
    path = tmp_path_factory.mktemp("trt") / "rule110.onnx"
    path.write_bytes(proto.SerializeToString())
    return load_step_model(path)


def test_without_tensorrt_the_engine_is_unavailable(step, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # None in sys.modules: `import tensorrt` fails
    from sead.runtime.engines.trt import TrtEngine

    with pytest.raises(EngineUnavailable) as info:
        TrtEngine(step)
    assert HINT in str(info.value)


def test_without_cuda_python_the_engine_is_unavailable(step, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    from sead.runtime.engines.trt import TrtEngine

    with pytest.raises(EngineUnavailable) as info:
        TrtEngine(step)
    assert HINT in str(info.value) and "cuda-python" in str(info.value)


def test_auto_falls_back_when_tensorrt_is_missing(step, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    from sead.runtime.api import make_engine

    assert make_engine(step, "auto", k=2).name in ("ort-cuda", "ort")


def test_channel_bound_comes_from_the_conv_weights(step):
    from sead.runtime.engines.trt import _max_channels

    assert _max_channels(step) == 32  # the hidden width, wider than the 3 + 8 input channels


# -- the engine's own logic, on a simulated TensorRT + CUDA runtime ------------------------------
# "Device" memory is host memory, stream work runs at once (or is recorded while capturing), and
# an execution context runs its ONNX graph with onnxruntime on the bytes at the bound addresses,
# with the addresses and shapes fixed when it is enqueued, as a captured CUDA graph fixes them.
import ctypes  # noqa: E402
import enum  # noqa: E402

import numpy as np  # noqa: E402


class FakeCudart(types.ModuleType):
    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorStreamCaptureUnsupported = 900

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3

    class cudaStreamCaptureMode(enum.IntEnum):
        cudaStreamCaptureModeThreadLocal = 1

    cudaStreamNonBlocking = 1

    def __init__(self, fail_capture=False):
        super().__init__("cuda.bindings.runtime")
        self.memory, self.pinned, self.recording, self.fail_capture = {}, {}, {}, fail_capture
        self.ok = (self.cudaError_t.cudaSuccess,)
        self.streams = iter(range(7, 1 << 30))

    def run(self, op, stream):
        """Stream work runs at once, or is recorded while its stream captures (streams are per
        batch, and batches run on several worker threads at once)."""
        if stream in self.recording:
            self.recording[stream].append(op)
        else:
            op()
        return self.ok

    def _alloc(self, table, n):
        buf = ctypes.create_string_buffer(n)
        table[ctypes.addressof(buf)] = buf
        return self.ok[0], ctypes.addressof(buf)

    def _free(self, table, ptr):
        return self.ok if table.pop(ptr, None) is not None else (self.cudaError_t.cudaErrorInvalidValue,)

    cudaGetDeviceCount = lambda self: (self.ok[0], 1)
    cudaGetDeviceProperties = lambda self, i: (self.ok[0], types.SimpleNamespace(name=b"Fake GPU\0", major=9, minor=0))
    cudaMalloc = lambda self, n: self._alloc(self.memory, n)
    cudaMallocHost = lambda self, n: self._alloc(self.pinned, n)
    cudaFree = lambda self, p: self._free(self.memory, p)
    cudaFreeHost = lambda self, p: self._free(self.pinned, p)
    cudaMemcpyAsync = lambda self, dst, src, n, kind, s: self.run(lambda: ctypes.memmove(dst, src, n), s)
    cudaMemsetAsync = lambda self, dst, v, n, s: self.run(lambda: ctypes.memset(dst, v, n), s)
    cudaStreamCreateWithFlags = lambda self, flags: (self.ok[0], next(self.streams))
    cudaStreamSynchronize = cudaStreamDestroy = cudaGetLastError = lambda self, *a: self.ok
    cudaGraphDestroy = cudaGraphExecDestroy = lambda self, g: self.ok
    cudaGraphInstantiate = lambda self, g, flags: (self.ok[0], list(g))
    cudaGraphLaunch = lambda self, g, s: [op() for op in g] and self.ok

    def cudaStreamBeginCapture(self, stream, mode):
        if self.fail_capture:
            return (self.cudaError_t.cudaErrorStreamCaptureUnsupported,)
        self.recording[stream] = []
        return self.ok

    def cudaStreamEndCapture(self, stream):
        return self.ok[0], self.recording.pop(stream)


def fake_tensorrt(cudart):
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.fake"
    trt.Logger = type("Logger", (), {"ERROR": 0, "__init__": lambda self, level: None})
    trt.BuilderFlag = types.SimpleNamespace(TF32=0)
    trt.TensorIOMode = types.SimpleNamespace(INPUT=1, OUTPUT=2)
    trt.DataType = types.SimpleNamespace(FLOAT=0, BOOL=9)
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(USER_MANAGED=2)
    trt.builds = []

    class Network:
        onnx = b""

    class Builder:
        def __init__(self, logger):
            pass

        create_network = lambda self, flags: Network()
        create_builder_config = lambda self: types.SimpleNamespace(clear_flag=lambda flag: None,
                                                                   add_optimization_profile=lambda profile: 0)
        create_optimization_profile = lambda self: types.SimpleNamespace(set_shape=lambda *a: None)
        build_serialized_network = lambda self, network, config: trt.builds.append(1) or network.onnx

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, data):
            self.network.onnx = bytes(data)
            return True

    class Context:
        def __init__(self, session):
            self.session, self.shapes, self.addresses = session, {}, {}
            self.outputs = [o.name for o in session.get_outputs()]

        set_input_shape = lambda self, name, shape: self.shapes.__setitem__(name, tuple(shape)) or True
        set_tensor_address = lambda self, name, ptr: self.addresses.__setitem__(name, ptr) or True
        update_device_memory_size_for_shapes = lambda self: 1024
        set_device_memory = lambda self, ptr, size: None

        def execute_async_v3(self, stream):
            shapes, addresses = dict(self.shapes), dict(self.addresses)  # fixed now, like a captured graph

            def op():
                view = lambda ptr, shape: np.ctypeslib.as_array((ctypes.c_float * int(np.prod(shape))).from_address(ptr))
                feeds = {n: view(addresses[n], s).reshape(s).copy() for n, s in shapes.items()}
                for name, out in zip(self.outputs, self.session.run(self.outputs, feeds)):
                    out = np.ascontiguousarray(out, np.float32)
                    ctypes.memmove(addresses[name], out.ctypes.data, out.nbytes)

            cudart.run(op, stream)
            return True

    class Engine:
        def __init__(self, blob):
            self.session = ort.InferenceSession(bytes(blob), providers=["CPUExecutionProvider"])
            self.io = [(i.name, trt.TensorIOMode.INPUT) for i in self.session.get_inputs()]
            self.io += [(o.name, trt.TensorIOMode.OUTPUT) for o in self.session.get_outputs()]

        create_execution_context = lambda self, strategy: Context(self.session)
        num_io_tensors = property(lambda self: len(self.io))
        get_tensor_name = lambda self, i: self.io[i][0]
        get_tensor_mode = lambda self, name: dict(self.io)[name]
        get_tensor_dtype = lambda self, name: trt.DataType.FLOAT

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None,
                                       "deserialize_cuda_engine": lambda self, blob: Engine(blob)})
    return trt


def install_fakes(monkeypatch, tmp_path, fail_capture=False):
    cudart = FakeCudart(fail_capture)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    trt = fake_tensorrt(cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setenv("SEAD_TRT_CACHE", str(tmp_path / "cache"))
    return trt, cudart


def _model(task, folder):
    """A small untrained model; for rule110 a hand-set one whose state rotates one cell a step
    and whose answer bit says whether that state equals the cell's own input bit, so reading a
    stale or misplaced state, or a misplaced problem row, changes answers."""
    from sead.runtime.tasks import get_task

    t = get_task(task)
    torch.manual_seed(1)
    model = SEAD(ModelConfig(task=task, input_channels=t.input_channels, classes=t.classes, boundary=t.boundary,
                             state_channels=4, hidden=16, readout_hidden=16))
    if task == "rule110":
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
            s0 = t.input_channels  # state channel 0; problem channels 1 and 2 are the one-hot bit
            for unit, sign in ((0, 1.0), (1, -1.0)):
                # rule: h = relu(+-(state0 + bit - 1/2)) of the left cell; state0' = h0 - h1
                model.rule_in.weight[unit, s0, 0] = sign
                model.rule_in.weight[unit, 2, 0], model.rule_in.weight[unit, 1, 0] = 0.5 * sign, -0.5 * sign
                model.rule_out.weight[0, unit, 0] = sign
                # readout: class 1 scores relu(+-(state0 + (2 bit - 1)) - 1), i.e. 1 when they agree
                model.read_in.weight[unit, s0, 0] = sign
                model.read_in.weight[unit, 2, 0], model.read_in.weight[unit, 1, 0] = sign, -sign
                model.read_in.bias[unit] = -1.0
                model.read_out.weight[1, unit, 0] = 1.0
            model.read_out.bias[0] = 0.5
    path = folder / f"{task}.onnx"
    path.write_bytes(build_step_graph(model, metadata_for(model, {}, "x" * 64, "0")).SerializeToString())
    return str(path)


@pytest.mark.parametrize("task", ["addition", "rule110"])
@pytest.mark.parametrize("fail_capture", [False, True])
def test_simulated_trt_matches_ort(task, fail_capture, monkeypatch, tmp_path):
    """Ping-pong, CUDA-graph replay (or, when capture fails, plain calls), compaction through the
    host, the readout, tiles (uploaded state and owned cells, state
    and changed_at read back), the disk cache and freeing: answers, steps and converged flags
    equal engine 'ort'."""
    pytest.importorskip("onnxruntime")
    from sead.runtime import Runtime
    from sead.runtime.engines import trt as trt_module
    from sead.runtime.tasks import get_task

    path = _model(task, tmp_path)
    rng = np.random.default_rng(0)
    t = get_task(task)
    lines = [t.random_line(rng, n, int(rng.integers(0, 40))) if task == "rule110" else t.random_line(rng, n)
             for n in [1, 3, 16, 16, 16, 40] * 40]  # 240 problems: many rows finish at different times
    lines += [t.random_line(rng, n, 30) if task == "rule110" else t.random_line(rng, n) for n in (90, 200)]
    options = dict(k=4, tile_from=64, tile=(8, 3), self_test=False)  # the last two lines run in tiles
    want = Runtime(path, "ort", **options).solve(lines)
    trt, cudart = install_fakes(monkeypatch, tmp_path, fail_capture)
    first = Runtime(path, "trt", **options)
    got = first.solve(lines)
    assert [(r.answer, r.steps, r.converged) for r in got] == [(r.answer, r.steps, r.converged) for r in want]
    assert first.engine.cuda_graphs is not fail_capture  # a failed capture is remembered
    first.close()
    assert not cudart.memory and not cudart.pinned  # every batch freed what it allocated
    builds = 3 if task == "rule110" else 2  # advance and readout; whole rings wrap in an advance of their own
    assert len(trt.builds) == builds
    again = Runtime(path, "trt", **options)
    assert again.solve(lines[:7]) == got[:7] and len(trt.builds) == builds  # from the disk cache
    again.close()


def test_rows_are_bounded_below_the_element_limit(monkeypatch, tmp_path):
    """No batch may reach 2**31-1 elements in any tensor: rows are at most max_row_cells long and
    at most max_rows(length) many; the loop tiles longer tapes and splits larger batches."""
    pytest.importorskip("onnxruntime")
    from sead.runtime import Runtime
    from sead.runtime.engines import trt as trt_module
    from sead.runtime.errors import SeadError
    from sead.runtime.tasks import get_task

    path = _model("rule110", tmp_path)
    step = load_step_model(path)
    install_fakes(monkeypatch, tmp_path)
    monkeypatch.setattr(trt_module, "MAX_ELEMENTS", 16 * 1000)  # 1000 cells at 16 channels
    engine = trt_module.TrtEngine(step, k=4, max_row_cells=98)
    assert engine.rows_limit == 10 and (engine.max_rows(98), engine.max_rows(99)) == (10, 0)  # a ring's are 2 longer
    with pytest.raises(SeadError, match="at most 10 rows"):
        engine.start(np.zeros((11, 3, 50), np.float32))
    with pytest.raises(SeadError, match="at most 98 cells"):
        engine.start(np.zeros((1, 3, 99), np.float32))
    engine.close()
    rng = np.random.default_rng(0)
    t = get_task("rule110")
    lines = [t.random_line(rng, n, 9) for n in (12, 40, 40, 300)] * 4
    options = dict(k=4, self_test=False)
    want = Runtime(path, "ort", **options).solve(lines)
    rt = Runtime(path, lambda s: trt_module.TrtEngine(s, k=4, max_row_cells=98), **options)
    assert rt.scheduler.tile_from == 49  # longer tapes run in tiles, whose rows stay under 98 cells
    assert rt.solve(lines) == want
    rt.close()


GRID_LINES = ["1*1", "9*9", "12*34", "999*1", "7*123456", "0*0", "123456*654321", "31415*92653"]


@pytest.mark.parametrize("fail_capture, model", [(False, "multiplication"), (True, "multiplication"),
                                                 (False, "multiplication_symbol")])
def test_simulated_tensorrt_runs_grids_like_ort(fail_capture, model, tiny_onnx, monkeypatch, tmp_path):
    """The grid path (a profile over rows, height and width; 4-D buffers, readout and
    compaction) of an untrained multiplication rule, with a sign or a symbol state
    (tests/test_grid.py has its PyTorch check)."""
    pytest.importorskip("onnxruntime")
    from sead.runtime import Runtime
    from sead.runtime.engines import trt as trt_module
    from sead.runtime.errors import SeadError

    path = str(tiny_onnx[model])
    want = Runtime(path, "ort", k=4, self_test=False).solve(GRID_LINES * 3, max_steps=12)
    install_fakes(monkeypatch, tmp_path, fail_capture)
    with Runtime(path, "trt", k=4, self_test=False) as rt:
        assert rt.solve(GRID_LINES * 3, max_steps=12) == want
        engine = rt.engine
        shapes = engine._shapes("advance")
        assert shapes["problem"][2][2:] == (trt_module.GRID_SIDE, trt_module.GRID_SIDE) and shapes["budget"][0] == (1, 1, 1, 1)
        with pytest.raises(SeadError, match="grids of at most 256 x 256 cells, not 2 x 300"):
            engine.start(np.zeros((1, engine.step.metadata.input_channels, 2, 300), np.float32))
