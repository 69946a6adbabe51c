"""Engine 'trt' on machines without TensorRT or a GPU.

Without the packages it is a clear EngineUnavailable with the pip hint, and `auto` moves on.
Everything else runs the engine on a strict simulation of TensorRT and the CUDA runtime (FakeCudart
and fake_tensorrt below, put in sys.modules), which executes the engine's ONNX graphs with ONNX
Runtime on the CPU and checks what TensorRT and CUDA would refuse:

- the ONNX parser refuses operators TensorRT lacks (SUPPORTED, from onnx-tensorrt's operator
  table for TensorRT 10), data types it lacks (uint16, uint32) or takes only at the graph's edge
  (uint8), and axes that are not constants;
- add_optimization_profile answers -1 for a profile without min <= opt <= max, and does not add
  it; the builder needs exactly one profile, covering every input with the graph's fixed dims, and
  refuses to build when a tensor at the profile's largest shapes passes its element limit;
- a plan is bytes holding TensorRT's version: another version, a truncation or junk deserializes
  to None; it records whether TF32 was cleared;
- IO tensors keep their own dtypes (uint8, int32, int64, bool, float32), read and written as such;
- an execution context refuses input shapes outside the profile, addresses not 256-byte aligned,
  and a launch with a shape or address missing, or with less activation memory than its shapes
  need (a user-managed context); it reports activation memory as a builder would, 0 for a graph
  without intermediate tensors; the memory APIs are those of the TensorRT version simulated
  (10.0: device_memory_size only; 10.1+: the _v2 names too; 11: only _v2);
- device memory is 256-byte aligned blocks; copies check their direction (host to device, device
  to host) and their bounds, as does every tensor a launch reads or writes; a launch scribbles on
  its activation memory;
- stream work (copies, launches, stream-ordered frees) runs only at synchronize, in order: a
  result read before synchronize is stale, like host memory that is pinned; work that touches
  freed or foreign memory is a sticky fault.

What the simulation cannot see: TensorRT's own numerics (its kernels, fusions, summation order,
precision choices) and its tactic selection, real build times and failures, real device memory,
timing and concurrency between streams, and whether a given TensorRT release behaves as its
documentation says. `trt` is checked by this simulation only, never on a GPU (docs/tensorrt.md).

Then: the engine answers exactly like `ort` on every shipped model, and tests of the tests show
that each of these mutations of the engine fails a check: a profile that does not cover the batch,
swapped copy directions, a missing synchronize, a zero activation size handled as failure.
"""
import ctypes
import enum
import json
import math
import sys
import threading
import types

import numpy as np
import pytest

from sead.runtime.errors import EngineUnavailable, SeadError

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from sead.runtime import Runtime  # noqa: E402
from sead.runtime.engines import trt as trt_module  # noqa: E402
from sead.runtime.engines.ort import OrtEngine  # noqa: E402
from sead.runtime.model_file import load_step_model  # noqa: E402
from sead.runtime.rule import Rule  # noqa: E402
from sead.runtime.tasks import get_task  # noqa: E402

HINT = "engine 'trt' needs TensorRT and a CUDA GPU: pip install 'sead[tensorrt]' (CUDA 12; 'sead[tensorrt-cu13]'"
SHIPPED = ("addition", "parity", "rule110", "multiplication")


# -- without the packages ------------------------------------------------------------------------------
def test_without_tensorrt_the_engine_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # None in sys.modules: `import tensorrt` fails
    with pytest.raises(EngineUnavailable) as info:
        trt_module.TrtEngine(load_step_model("addition"))
    assert HINT in str(info.value) and info.value.quiet


def test_without_cuda_python_the_engine_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(EngineUnavailable) as info:
        trt_module.TrtEngine(load_step_model("addition"))
    assert HINT in str(info.value) and "cuda-python" in str(info.value)


def test_auto_falls_back_when_tensorrt_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    from sead.runtime.api import make_engine

    assert make_engine(load_step_model("addition"), "auto", k=2).name in ("ort-cuda", "ort")


# -- the simulated CUDA runtime ------------------------------------------------------------------------
class DeviceFault(Exception):
    """Stream work that touched memory it must not: a sticky error at the next synchronize."""


class FakeCudart(types.ModuleType):
    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorMemoryAllocation = 2
        cudaErrorIllegalAddress = 700

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToHost = 0
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3

    class cudaDeviceAttr(enum.IntEnum):
        cudaDevAttrMemoryPoolsSupported = 115

    cudaStreamNonBlocking = 1
    CAPACITY = 1 << 30  # bytes of "device memory"

    def __init__(self, name="cuda.bindings.runtime"):
        super().__init__(name)
        self.lock = threading.RLock()
        self.blocks = {}  # pointer -> (ctypes buffer, bytes)
        self.queues = {}  # stream handle -> [work]
        self.faults = []  # what stream work did wrong, in order
        self.copies = []  # (kind, bytes) of every copy enqueued
        self.handles = iter(range(7, 1 << 30))
        self.ok = (self.cudaError_t.cudaSuccess,)

    # memory
    def block(self, ptr: int, n: int):
        """The device block holding [ptr, ptr + n), or None."""
        for base, (_, size) in self.blocks.items():
            if base <= ptr and ptr + n <= base + size:
                return base
        return None

    def on_device(self, ptr: int) -> bool:
        return self.block(ptr, 1) is not None

    def read(self, ptr: int, dtype, shape) -> np.ndarray:
        n = math.prod(shape) * np.dtype(dtype).itemsize
        if self.block(ptr, n) is None:
            raise DeviceFault(f"read of {n} bytes at {ptr:#x}: not inside one device block")
        return np.frombuffer(ctypes.string_at(ptr, n), dtype).reshape(shape).copy()

    def write(self, ptr: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        if self.block(ptr, array.nbytes) is None:
            raise DeviceFault(f"write of {array.nbytes} bytes at {ptr:#x}: not inside one device block")
        ctypes.memmove(ptr, array.ctypes.data, array.nbytes)

    # streams
    def enqueue(self, stream, work) -> None:
        with self.lock:
            self.queues[int(stream)].append(work)

    def _drain(self, stream) -> tuple:
        with self.lock:
            work, self.queues[int(stream)] = self.queues[int(stream)], []
            failed = False
            for w in work:
                try:
                    w()
                except DeviceFault as exc:
                    self.faults.append(str(exc))
                    failed = True
            return (self.cudaError_t.cudaErrorIllegalAddress,) if failed else self.ok

    def cudaGetDeviceCount(self):
        return self.ok[0], 1

    def cudaGetDeviceProperties(self, device):
        return self.ok[0], types.SimpleNamespace(name=b"Simulated GPU\0", major=9, minor=0)

    def cudaDeviceGetAttribute(self, attr, device):
        return self.ok[0], 1

    def cudaStreamCreateWithFlags(self, flags):
        with self.lock:
            handle = next(self.handles)
            self.queues[handle] = []
            return self.ok[0], handle

    def cudaStreamSynchronize(self, stream):
        return self._drain(stream)

    def cudaStreamDestroy(self, stream):
        result = self._drain(stream)  # CUDA completes the work queued on a stream it destroys
        with self.lock:
            del self.queues[int(stream)]
        return result

    def cudaMallocAsync(self, n, stream):
        with self.lock:
            if int(stream) not in self.queues or n < 1:
                return (self.cudaError_t.cudaErrorInvalidValue,)
            if sum(size for _, size in self.blocks.values()) + n > self.CAPACITY:
                return (self.cudaError_t.cudaErrorMemoryAllocation,)
            buf = ctypes.create_string_buffer(n + 256)
            ptr = (ctypes.addressof(buf) + 255) & ~255  # cudaMalloc's alignment
            self.blocks[ptr] = (buf, n)
            return self.ok[0], ptr

    def cudaFreeAsync(self, ptr, stream):
        with self.lock:
            if ptr not in self.blocks or int(stream) not in self.queues:
                return (self.cudaError_t.cudaErrorInvalidValue,)

            def free():
                if self.blocks.pop(ptr, None) is None:
                    raise DeviceFault(f"double free of {ptr:#x}")

            self.enqueue(stream, free)
            return self.ok

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        K = self.cudaMemcpyKind
        with self.lock:
            if kind == K.cudaMemcpyHostToDevice:
                right = self.block(dst, n) is not None and not self.on_device(src)
            elif kind == K.cudaMemcpyDeviceToHost:
                right = self.block(src, n) is not None and not self.on_device(dst)
            else:
                right = False  # the engine has no business copying anything else
            if not right or int(stream) not in self.queues:
                return (self.cudaError_t.cudaErrorInvalidValue,)
            self.copies.append((K(kind).name, n))

            def copy():
                device = dst if kind == K.cudaMemcpyHostToDevice else src
                if self.block(device, n) is None:
                    raise DeviceFault(f"copy of {n} bytes at {device:#x} after its block was freed")
                ctypes.memmove(dst, src, n)

            self.enqueue(stream, copy)
            return self.ok


# -- the simulated TensorRT ----------------------------------------------------------------------------
F, I32, I64, B, U8 = "FLOAT", "INT32", "INT64", "BOOL", "UINT8"
NUM = {F, I32, I64}
# Operators TensorRT's ONNX parser takes, with the data types it takes for each (onnx-tensorrt
# docs/operators.md, TensorRT 10), as far as the runtime's graphs need; anything else is refused
SUPPORTED = {
    "Abs": NUM, "Add": NUM, "And": {B}, "ArgMax": NUM, "Cast": NUM | {U8, B}, "Concat": NUM | {B}, "Conv": {F},
    "Equal": NUM, "Floor": {F}, "Gather": NUM | {B}, "GatherElements": {F, I32}, "Gemm": {F}, "Greater": NUM,
    "Identity": NUM | {B},
    "MatMul": {F}, "Mul": NUM, "Neg": NUM, "Not": {B}, "ReduceMax": NUM, "ReduceSum": NUM, "Relu": NUM,
    "Reshape": NUM | {B}, "Shape": NUM | {B}, "Slice": NUM | {B}, "Squeeze": NUM | {B}, "Sub": NUM,
    "Transpose": NUM | {B}, "Unsqueeze": NUM | {B}, "Where": NUM | {B},
}
DATA_INPUTS = {"Gather": (0,), "GatherElements": (0,), "Where": (1, 2), "Reshape": (0,), "Slice": (0,), "Squeeze": (0,), "Unsqueeze": (0,),
               "ReduceMax": (0,), "ReduceSum": (0,)}  # the others: every input is data
CONSTANT_INPUTS = {"ReduceMax": (1,), "ReduceSum": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Slice": (3,)}
TRT_TYPES = {TensorProto.FLOAT: F, TensorProto.INT32: I32, TensorProto.INT64: I64, TensorProto.BOOL: B,
             TensorProto.UINT8: U8}
NUMPY = {F: np.float32, I32: np.int32, I64: np.int64, B: np.bool_, U8: np.uint8}


def _types(model) -> dict:
    """{tensor: ONNX elem type} of every tensor of the graph (shape inference for the inside)."""
    g = onnx.shape_inference.infer_shapes(model).graph
    types_ = {t.name: t.data_type for t in g.initializer}
    for v in (*g.input, *g.output, *g.value_info):
        types_[v.name] = v.type.tensor_type.elem_type
    return types_


def _parse_problems(model) -> list[str]:
    """What TensorRT's ONNX parser would refuse in the graph: [] if nothing."""
    g, found = model.graph, []
    tensor_types = _types(model)
    edge = {v.name for v in (*g.input, *g.output)}
    inits = {t.name for t in g.initializer}
    for name, t in tensor_types.items():
        if t not in TRT_TYPES:
            found.append(f"tensor {name!r} has type {TensorProto.DataType.Name(t)}, which TensorRT lacks")
        elif t == TensorProto.UINT8 and name not in edge:
            found.append(f"tensor {name!r} is uint8 inside the network (TensorRT: graph inputs and outputs only)")
    for node in g.node:
        if node.op_type not in SUPPORTED:
            found.append(f"node {node.name}: operator {node.op_type} is not supported")
            continue
        data = DATA_INPUTS.get(node.op_type, range(len(node.input)))
        for i in data:
            kind = TRT_TYPES.get(tensor_types.get(node.input[i]))
            if kind is not None and kind not in SUPPORTED[node.op_type]:
                found.append(f"node {node.name}: {node.op_type} does not take {kind}")
        for i in CONSTANT_INPUTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] and node.input[i] not in inits:
                found.append(f"node {node.name}: {node.op_type}'s input {i} must be an initializer")
        touches_u8 = any(tensor_types.get(t) == TensorProto.UINT8 for t in (*node.input, *node.output))
        if touches_u8 and node.op_type != "Cast":
            found.append(f"node {node.name}: {node.op_type} cannot read or write uint8")
        if node.op_type == "Cast":
            to = next(a.i for a in node.attribute if a.name == "to")
            if TRT_TYPES.get(to) not in SUPPORTED["Cast"]:
                found.append(f"node {node.name}: Cast to {TensorProto.DataType.Name(to)}")
    return found


def _largest_tensor(model, shapes: dict) -> int:
    """Elements of the largest tensor of the graph when its inputs have `shapes`."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for v in m.graph.input:
        for d, n in zip(v.type.tensor_type.shape.dim, shapes[v.name]):
            d.Clear()
            d.dim_value = n
    g = onnx.shape_inference.infer_shapes(m).graph
    sizes = [math.prod(d.dim_value for d in v.type.tensor_type.shape.dim) for v in (*g.output, *g.value_info)
             if all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)]
    return max(sizes + [math.prod(s) for s in shapes.values()])


def fake_tensorrt(cudart: FakeCudart, version: str = "10.16.1", zero_activation: bool = False,
                  invalid_profile: bool = False):
    """A `tensorrt` module of the given version (its memory APIs as that version has them)."""
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major, minor = map(int, version.split(".")[:2])
    v1, v2 = major == 10, (major, minor) >= (10, 1)
    trt.MAX_ELEMENTS = (1 << 31) - 1
    trt.errors, trt.builds, trt.launches = [], [], []
    trt.DataType = enum.Enum("DataType", "FLOAT HALF INT8 INT32 BOOL UINT8 FP8 BF16 INT64 INT4")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
    trt.ExecutionContextAllocationStrategy = enum.Enum("ExecutionContextAllocationStrategy",
                                                       "STATIC ON_PROFILE_CHANGE USER_MANAGED")
    trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16 BF16 INT8 TF32 STRICT_TYPES")
    trt.Logger = type("Logger", (), {"ERROR": 1, "WARNING": 2, "__init__": lambda self, level: None})

    class Network:
        def __init__(self):
            self.model = None

    class Parser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, data) -> bool:
            try:
                model = onnx.load_from_string(bytes(data))
            except Exception as exc:
                self.errors = [f"not an ONNX model: {exc}"]
                return False
            self.errors = _parse_problems(model)
            if not self.errors:
                self.network.model = model
            return not self.errors

        num_errors = property(lambda self: len(self.errors))
        get_error = lambda self, i: self.errors[i]

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = tuple(map(tuple, (low, opt, high)))

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.builder_optimization_level = {trt.BuilderFlag.TF32}, [], 3

        clear_flag = lambda self, flag: self.flags.discard(flag)

        def add_optimization_profile(self, profile) -> int:
            """The profile's index, or -1 (and not added) when min <= opt <= max fails anywhere."""
            valid = all(len(a) == len(b) == len(c) and all(1 <= x <= y <= z for x, y, z in zip(a, b, c))
                        for a, b, c in profile.shapes.values())
            if invalid_profile or not valid:
                trt.errors.append("add_optimization_profile: invalid profile")
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

    def profile_problem(network, profile) -> str | None:
        for v in network.model.graph.input:
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            if v.name not in profile.shapes:
                return f"no shape for input {v.name!r}"
            low, opt, high = profile.shapes[v.name]
            if not len(low) == len(opt) == len(high) == len(dims):
                return f"{v.name!r}: rank"
            for d, a, b, c in zip(dims, low, opt, high):
                if not 1 <= a <= b <= c or (isinstance(d, int) and not a == b == c == d):
                    return f"{v.name!r}: {low} {opt} {high} against {dims}"
        return None

    class Builder:
        def __init__(self, logger):
            pass

        create_network = lambda self, flags=0: Network()
        create_builder_config = lambda self: Config()
        create_optimization_profile = lambda self: Profile()

        def build_serialized_network(self, network, config):
            if network.model is None or len(config.profiles) != 1:
                trt.errors.append("build: no parsed network, or not exactly one profile")
                return None
            profile = config.profiles[0]
            problem = profile_problem(network, profile)
            if problem:
                trt.errors.append(f"build: invalid optimization profile: {problem}")
                return None
            largest = _largest_tensor(network.model, {n: s[2] for n, s in profile.shapes.items()})
            if largest > trt.MAX_ELEMENTS:
                trt.errors.append(f"build: a tensor of {largest} elements at the profile's largest shapes")
                return None
            g = network.model.graph
            io = [[v.name, True, TRT_TYPES[v.type.tensor_type.elem_type]] for v in g.input]
            io += [[v.name, False, TRT_TYPES[v.type.tensor_type.elem_type]] for v in g.output]
            outputs = {v.name for v in g.output}
            header = {"version": trt.__version__, "profile": profile.shapes, "io": io,
                      "tf32": trt.BuilderFlag.TF32 in config.flags, "opt_level": config.builder_optimization_level,
                      "intermediates": sum(o not in outputs for n in g.node for o in n.output)}
            trt.builds.append(header)
            text = json.dumps(header).encode()
            return b"FAKEPLAN" + len(text).to_bytes(4, "little") + text + network.model.SerializeToString()

    class Context:
        def __init__(self, engine, strategy):
            self.engine, self.strategy = engine, strategy
            self.shapes, self.addresses, self.memory = {}, {}, None

        def set_input_shape(self, name, shape) -> bool:
            shape = tuple(shape)
            low, _, high = self.engine.profile.get(name, ((), (), ()))
            if len(shape) != len(low) or not all(a <= s <= b for a, s, b in zip(low, shape, high)):
                trt.errors.append(f"set_input_shape: {name!r} {shape} is outside the profile {low}..{high}")
                return False
            self.shapes[name] = shape
            return True

        def update_device_memory_size_for_shapes(self) -> int:
            if set(self.shapes) != set(self.engine.profile):
                return 0  # TensorRT: 0 when it cannot size them
            return self.engine.activation(self.shapes)

        def set_tensor_address(self, name, ptr) -> bool:
            if name not in self.engine.modes or int(ptr) % 256:
                trt.errors.append(f"set_tensor_address: {name!r} at {int(ptr):#x}")
                return False
            self.addresses[name] = int(ptr)
            return True

        def _set_memory(self, ptr, size=None):
            self.memory = (int(ptr), size)

        device_memory = property(None, lambda self, ptr: self._set_memory(ptr))

        def execute_async_v3(self, stream_handle) -> bool:
            e = self.engine
            if not isinstance(stream_handle, int):
                trt.errors.append("execute_async_v3 takes the stream's handle as an int")
                return False
            if set(self.shapes) != set(e.profile) or set(self.addresses) != set(e.modes):
                trt.errors.append("execute_async_v3: an input shape or a tensor address is not set")
                return False
            need = e.activation(self.shapes)
            ptr, size = self.memory or (0, None)
            if self.strategy == trt.ExecutionContextAllocationStrategy.USER_MANAGED and need:
                if self.memory is None or not ptr or (size is not None and size < need) \
                        or cudart.block(ptr, need) is None or ptr % 256:
                    trt.errors.append(f"execute_async_v3: {need} bytes of activation memory needed, "
                                      f"given {self.memory}")
                    return False
            shapes, addresses = dict(self.shapes), dict(self.addresses)
            trt.launches.append(e.name)

            def launch():
                if need:
                    ctypes.memset(ptr, 0xA5, need)  # TensorRT's scratch: whatever shares it is garbage now
                feeds = {n: cudart.read(addresses[n], NUMPY[e.dtypes[n]], s) for n, s in shapes.items()}
                outs = e.session.run(e.outputs, feeds)
                for name, value in zip(e.outputs, outs):
                    if value.dtype != NUMPY[e.dtypes[name]]:
                        raise DeviceFault(f"{name!r} came out {value.dtype}, declared {e.dtypes[name]}")
                    cudart.write(addresses[name], value)

            cudart.enqueue(stream_handle, launch)
            return True

    class Engine:
        def __init__(self, header, onnx_bytes):
            self.header = header
            self.name = onnx.load_from_string(onnx_bytes).graph.name
            self.profile = {n: tuple(map(tuple, s)) for n, s in header["profile"].items()}
            self.modes = {n: trt.TensorIOMode.INPUT if is_input else trt.TensorIOMode.OUTPUT
                          for n, is_input, _ in header["io"]}
            self.dtypes = {n: dtype for n, _, dtype in header["io"]}
            self.names = [n for n, _, _ in header["io"]]
            self.outputs = [n for n, is_input, _ in header["io"] if not is_input]
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

        def activation(self, shapes) -> int:
            """Bytes of scratch for these input shapes, as a builder might report: every tensor
            inside the graph as large as its largest input, float32; 0 without such tensors."""
            if zero_activation:
                return 0
            return 4 * self.header["intermediates"] * max(math.prod(s) for s in shapes.values())

        num_io_tensors = property(lambda self: len(self.names))
        get_tensor_name = lambda self, i: self.names[i]
        get_tensor_mode = lambda self, name: self.modes.get(name, trt.TensorIOMode.NONE)
        get_tensor_dtype = lambda self, name: getattr(trt.DataType, self.dtypes[name])
        create_execution_context = lambda self, strategy=None: Context(
            self, strategy or trt.ExecutionContextAllocationStrategy.STATIC)
        profile_bound = lambda self: self.activation({n: s[2] for n, s in self.profile.items()})

    members = {}
    if v1:  # TensorRT 10.0 to 10.x
        members["device_memory_size"] = property(lambda self: self.profile_bound())
        members["get_device_memory_size_for_profile"] = lambda self, i: self.profile_bound()
    if v2:  # TensorRT 10.1 on, and 11
        members["device_memory_size_v2"] = property(lambda self: self.profile_bound())
        members["get_device_memory_size_for_profile_v2"] = lambda self, i: self.profile_bound()
        Context.set_device_memory = lambda self, ptr, size: self._set_memory(ptr, size)
    trt.ICudaEngine = type("ICudaEngine", (Engine,), members)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            try:
                assert data[:8] == b"FAKEPLAN"
                n = int.from_bytes(data[8:12], "little")
                header = json.loads(data[12: 12 + n])
                assert header["version"] == trt.__version__, "built by another TensorRT"
                return trt.ICudaEngine(header, data[12 + n:])
            except Exception as exc:  # TensorRT logs why and returns None
                trt.errors.append(f"deserialize_cuda_engine: {type(exc).__name__}: {exc}")
                return None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


def install_fakes(monkeypatch, tmp_path, cuda_location="new", **options):
    """Fake tensorrt and cuda-python in sys.modules (cuda-python's new module, or its old one);
    the engine cache in tmp_path. -> (trt, cudart)."""
    cudart = FakeCudart()
    cuda = types.ModuleType("cuda")
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    if cuda_location == "new":
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = cudart
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    else:  # cuda-python < 12.6: only `from cuda import cudart`
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)
        cuda.cudart = cudart
        monkeypatch.setitem(sys.modules, "cuda.cudart", cudart)
    trt = fake_tensorrt(cudart, **options)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setenv("SEAD_TRT_CACHE", str(tmp_path / "cache"))
    return trt, cudart


# -- the checks ----------------------------------------------------------------------------------------
def _lines(task: str, rng, n: int = 120) -> list[str]:
    """Short problems of many lengths (batches whose rows finish at different times: keep and
    compaction), and for tapes two long ones that run in tiles (tile_from=64)."""
    t = get_task(task)
    sizes = rng.integers(1, 12 if task == "multiplication" else 30, n)
    lines = [t.random_line(rng, int(s), int(rng.integers(0, 40))) for s in sizes]
    if task == "multiplication":
        return lines + ["0*0", "99999999*99999999", "1*123456789012"]
    return lines + [t.random_line(rng, m, 60) for m in (150, 333)]


def _key(results):
    return [(r.answer, r.steps, r.converged) for r in results]


def check_solves_like_ort(model, engine, lines, cudart, **options):
    """The suite's check on whole solves: answers, steps and converged flags equal engine 'ort';
    no stream work faulted; every device block freed at close. "trt" is the bare TrtEngine, so
    that it runs its own tile windows (make_engine hands small ones to `ort`)."""
    options = dict(dict(k=4, tile_from=64, tile=(8, 3), dense_first=0, self_test=False), **options)
    if engine == "trt":
        engine = lambda s: trt_module.TrtEngine(s, options["k"])
    with Runtime(model, "ort", **options) as rt:
        want = rt.solve(lines)
    with Runtime(model, engine, **options) as rt:
        assert rt.engine_name == "trt"
        got = rt.solve(lines)
    assert _key(got) == _key(want)
    assert not cudart.faults, cudart.faults
    assert not cudart.blocks and not cudart.queues


def _random_codes(rule: Rule, rng, rows: int, shape: tuple, wrap: bool = False) -> np.ndarray:
    """(rows, *shape) uint8 codes (1 + symbol, 0 empty); the last cell (a grid: last row and
    column) empty unless wrap; some rows shorter than others."""
    codes = rng.integers(1, rule.input_channels, (rows, *shape)).astype(np.uint8)
    if wrap:
        return codes
    if rule.rank == 1:
        ends = rng.integers(1, shape[0], rows)
        codes[np.arange(shape[0])[None] >= ends[:, None]] = 0
    else:
        codes[:, -1, :] = 0
        codes[:, :, -1] = 0
    return codes


def check_protocol_like_ort(step, engine, rng):
    """The suite's check of the protocol itself: every call of `engine` returns the same arrays
    as engine 'ort' running the same (cl) graphs, call by call."""
    ref = OrtEngine(step, "cpu", layout="cl", k_choices=engine.k_choices)
    rule = ref.rule
    shape = (23,) if rule.rank == 1 else (6, 7)
    wrap = rule.ring
    codes = _random_codes(rule, rng, min(37, engine.max_rows(math.prod(shape))), shape, wrap)
    generations = step.metadata.convergence == "generations"
    a, b = engine.start(codes, wrap=wrap, generations=generations), ref.start(codes, wrap=wrap, generations=generations)
    try:
        for call, k in enumerate((4, 1, 2, 4, 4)):
            budget = rng.integers(0, k + 1, a.rows) if generations else None
            np.testing.assert_array_equal(a.advance(k, budget), b.advance(k, budget), err_msg=f"advance {call}")
            if call == 2:  # drop most rows; they go on in new batches, started from their state codes
                rows = np.flatnonzero(rng.random(a.rows) < 0.2)
                a.keep(rows), b.keep(rows)
                assert a.rows == b.rows == len(rows)
                states = a.state_codes()
                np.testing.assert_array_equal(states, b.state_codes())
                a.close(), b.close()
                a = engine.start(codes[rows], wrap=wrap, generations=generations, state_codes=states)
                b = ref.start(codes[rows], wrap=wrap, generations=generations, state_codes=states)
            np.testing.assert_array_equal(a.classes(), b.classes(), err_msg=f"classes {call}")
    finally:
        a.close(), b.close()
    if rule.rank == 1:  # tile windows: hot and owned, from no state and from state codes
        windows = _random_codes(rule, rng, 9, (40,))
        states = None
        for k in (4, 2):
            (sa, ha), (sb, hb) = engine.run_windows(windows, states, k), ref.run_windows(windows, states, k)
            np.testing.assert_array_equal(sa, sb), np.testing.assert_array_equal(ha, hb)
            assert sa.dtype == rule.code_dtype
            owned = np.zeros(windows.shape, bool)
            owned[:, k:-k - 1] = True
            assert engine.run_windows(windows, states, k, owned)[1] == ref.run_windows(windows, states, k, owned)[1]
            states = sa
        np.testing.assert_array_equal(engine.classify(windows, states), ref.classify(windows, states))
        np.testing.assert_array_equal(engine.classify(windows, None), ref.classify(windows, None))
    ref.close()


# -- the engine on the simulation ----------------------------------------------------------------------
@pytest.mark.parametrize("model", SHIPPED)
def test_answers_like_ort_on_every_shipped_model(model, monkeypatch, tmp_path):
    """Short rows of many lengths, budgets (rule110 runs generations), tile windows (long tapes),
    keep and compaction, rings (rule110), grids (multiplication); uint16 state codes
    (multiplication's 13-channel sign state) travel as int32, uint8 ones as they are."""
    _, cudart = install_fakes(monkeypatch, tmp_path)
    check_solves_like_ort(model, "trt", _lines(model, np.random.default_rng(1)), cudart)


@pytest.mark.parametrize("model", SHIPPED)
def test_every_protocol_call_returns_what_ort_returns(model, monkeypatch, tmp_path):
    _, cudart = install_fakes(monkeypatch, tmp_path)
    engine = trt_module.TrtEngine(load_step_model(model), k=4)
    assert engine.name == "trt" and engine.k_choices == (1, 2, 4)
    check_protocol_like_ort(load_step_model(model), engine, np.random.default_rng(2))
    engine.close()
    assert not cudart.faults and not cudart.blocks


@pytest.mark.parametrize("version", ["10.0.1", "10.8.0", "11.4.0"])
def test_tensorrt_10_and_11_memory_apis(version, monkeypatch, tmp_path):
    """10.0 has device_memory_size and the device_memory setter only, 11 only the _v2 names and
    set_device_memory; the engine sizes activation memory on each."""
    trt, cudart = install_fakes(monkeypatch, tmp_path, version=version)
    check_solves_like_ort("addition", "trt", _lines("addition", np.random.default_rng(3), 40), cudart)
    assert trt.launches and not trt.errors


def test_the_old_cuda_python_location(monkeypatch, tmp_path):
    """cuda-python before 12.6 has only `from cuda import cudart`."""
    _, cudart = install_fakes(monkeypatch, tmp_path, cuda_location="old")
    check_solves_like_ort("parity", "trt", _lines("parity", np.random.default_rng(4), 30), cudart)


def test_zero_activation_memory_is_valid(monkeypatch, tmp_path):
    """A builder may report 0 bytes of activation memory (all of a graph fused, or one Identity):
    the engine runs with a null block, as TensorRT documents for size 0."""
    trt, cudart = install_fakes(monkeypatch, tmp_path, zero_activation=True)
    check_solves_like_ort("rule110", "trt", _lines("rule110", np.random.default_rng(5), 40), cudart)
    assert trt.launches and not trt.errors


def test_a_graph_that_is_one_identity_needs_no_activation_memory(monkeypatch, tmp_path):
    trt, cudart = install_fakes(monkeypatch, tmp_path)
    engine = trt_module.TrtEngine(load_step_model("parity"), k=2)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "cells"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "cells"])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    plan = engine.loader.load("identity", model, engine.profile(model))
    assert plan.memory_bound == 0
    ctx = plan.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
    assert ctx.set_input_shape("x", (3, 5))
    assert engine.activation_bytes(plan, ctx) == 0
    _, stream = cudart.cudaStreamCreateWithFlags(1)
    _, src = cudart.cudaMallocAsync(60, stream)
    _, dst = cudart.cudaMallocAsync(60, stream)
    data = np.arange(15, dtype=np.float32)
    cudart.cudaMemcpyAsync(src, data.ctypes.data, 60, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)
    assert ctx.set_tensor_address("x", src) and ctx.set_tensor_address("y", dst)
    ctx.set_device_memory(0, 0)
    assert ctx.execute_async_v3(stream)
    out = np.zeros(15, np.float32)
    cudart.cudaMemcpyAsync(out.ctypes.data, dst, 60, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)
    assert cudart.cudaStreamSynchronize(stream) == cudart.ok
    np.testing.assert_array_equal(out, data)
    engine.close()


def test_registry_and_auto_pick_trt_when_it_starts(monkeypatch, tmp_path):
    install_fakes(monkeypatch, tmp_path)
    from sead.runtime.api import make_engine

    step = load_step_model("addition")
    assert make_engine(step, "auto", k=4).name == "trt"
    assert make_engine(step, "trt").k_choices == (1, 2, 4, 8, 16, 32, 64, 128)  # the CPU's K: tiles for the host
    with Runtime("addition", "trt", k=4) as rt:  # its self-test: the task's canonical problems
        assert rt.solve(["99999+1"])[0].answer == "100000"
    # the registry's trt runs a long tape's small tile windows on `ort`, its larger calls itself
    with Runtime("addition", "trt", k=4, tile_from=64, tile=(8, 3), dense_first=0) as rt:
        line = "9" * 5000 + "+1"
        assert rt.solve([line])[0].answer == "1" + "0" * 5000
        assert isinstance(rt.engine.device, trt_module.TrtEngine)
        assert rt.engine.host_calls > 0 and rt.engine.device_calls > 0


def test_plans_are_cached_on_disk_and_built_as_tensorrt_should(monkeypatch, tmp_path, capfd):
    trt, cudart = install_fakes(monkeypatch, tmp_path)
    step = load_step_model("multiplication")
    engine = trt_module.TrtEngine(step, k=4)
    assert len(trt.builds) == 3 and capfd.readouterr().err.count("sead: building the TensorRT") == 3
    assert all(not b["tf32"] for b in trt.builds)  # fp32 products, as the other engines compute them
    dtypes = {name: dtype for b in trt.builds for name, _, dtype in b["io"]}
    assert dtypes == {"codes": "UINT8", "neighbours": "INT64", "features": "FLOAT", "mask": "FLOAT",
                      "minus_mask": "FLOAT", "state": "FLOAT", "state_out": "FLOAT", "last": "FLOAT",
                      "state_codes": "INT32", "classes": "UINT8"}  # uint16 codes cross as int32
    again = trt_module.TrtEngine(step, k=4)
    assert len(trt.builds) == 3 and capfd.readouterr().err == ""  # all three from the cache
    engine.close(), again.close()
    files = sorted((tmp_path / "cache").glob("*.engine"))
    assert len(files) == 3 and all(f.read_bytes()[:8] == trt_module.MAGIC for f in files)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "other-tensorrt", "another-plan", "empty"])
def test_a_bad_cache_file_is_rebuilt_never_run(damage, monkeypatch, tmp_path, capfd):
    """A truncated file, a flipped bit, a plan TensorRT cannot load (another version), a sound
    file of another plan: rebuilt with one line on stderr, answers as before."""
    trt, cudart = install_fakes(monkeypatch, tmp_path)
    step = load_step_model("parity")
    trt_module.TrtEngine(step, k=2).close()
    capfd.readouterr()
    files = sorted((tmp_path / "cache").glob("*-finish-*.engine"))
    assert len(files) == 1
    path, data = files[0], files[0].read_bytes()
    key, head = data[8:40], 8 + 64
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])
    elif damage == "other-tensorrt":
        other = data[head:].replace(f'"version": "{trt.__version__}"'.encode(), b'"version": "10.15.0"')
        assert other != data[head:]
        path.write_bytes(trt_module.MAGIC + key + trt_module.hashlib.sha256(other).digest() + other)
    elif damage == "another-plan":
        prepare = next((tmp_path / "cache").glob("*-prepare-*.engine")).read_bytes()
        path.write_bytes(prepare)
    else:
        path.write_bytes(b"")
    engine = trt_module.TrtEngine(step, k=2)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rebuilding it" in err[0] and str(path) in err[0], err
    assert path.read_bytes()[:8] == trt_module.MAGIC and len(path.read_bytes()) == len(data)
    check_solves_like_ort("parity", lambda s: engine, _lines("parity", np.random.default_rng(6), 30), cudart)


def test_limits_and_the_profile_that_covers_them(monkeypatch, tmp_path):
    """rows x cells up to the engine's limits: a batch at the profile's corner runs; the profile
    keeps every tensor under the element limit (the simulated builder checks it); the loop tiles
    tapes longer than a row may be."""
    trt, cudart = install_fakes(monkeypatch, tmp_path)
    step = load_step_model("parity")
    rule = Rule.from_step(step)
    per_cell = trt_module.TrtEngine(step, k=2, max_row_cells=64).elements_per_cell  # the widest tensor's values a cell
    monkeypatch.setattr(trt_module, "MAX_ELEMENTS", per_cell * 64 * 10)  # 10 rows of 64 cells
    trt.MAX_ELEMENTS = trt_module.MAX_ELEMENTS
    monkeypatch.setenv("SEAD_TRT_CACHE", str(tmp_path / "limited"))  # built afresh under the limit
    engine = trt_module.TrtEngine(step, k=2, max_row_cells=64)
    assert (engine.elements_per_cell, engine.rows_limit) == (per_cell, 10)
    assert (engine.max_rows(64), engine.max_rows(65)) == (10, 0)
    corner = _random_codes(rule, np.random.default_rng(7), 10, (64,))
    batch = engine.start(corner)
    assert batch.advance(2).shape == (10,) and batch.classes().shape == (10, 64)
    batch.close()
    with pytest.raises(SeadError, match="at most 10 of them"):
        engine.start(_random_codes(rule, np.random.default_rng(7), 11, (64,)))
    lines = _lines("parity", np.random.default_rng(8), 40)  # batches of 10 rows; tapes past 32 cells in tiles
    check_solves_like_ort("parity", lambda s: engine, lines, cudart, k=2, tile=(8, 2))
    trt.MAX_ELEMENTS //= 2  # a profile past the builder's limit is not built
    monkeypatch.setenv("SEAD_TRT_CACHE", str(tmp_path / "other"))
    with pytest.raises(EngineUnavailable, match="cannot run this model here"):
        trt_module.TrtEngine(step, k=2, max_row_cells=64)


@pytest.mark.parametrize("how", ["min-past-max", "refused-by-tensorrt"])
def test_an_invalid_profile_is_a_clear_error(how, monkeypatch, tmp_path):
    """add_optimization_profile's -1 is checked: the engine stops there with a clear message."""
    trt, _ = install_fakes(monkeypatch, tmp_path, invalid_profile=how == "refused-by-tensorrt")
    if how == "min-past-max":
        profile = trt_module.TrtEngine.profile
        monkeypatch.setattr(trt_module.TrtEngine, "profile", lambda self, model: {
            n: (high, opt, low) for n, (low, opt, high) in profile(self, model).items()})
    with pytest.raises(EngineUnavailable, match="cannot run this model here: TensorRT refused the optimization"):
        trt_module.TrtEngine(load_step_model("addition"), k=2)
    assert trt.errors == ["add_optimization_profile: invalid profile"] and not trt.builds


def test_an_operator_tensorrt_lacks_is_a_clear_error(monkeypatch, tmp_path):
    install_fakes(monkeypatch, tmp_path)
    x = helper.make_tensor_value_info("codes", TensorProto.INT32, ["batch", "cells"])
    y = helper.make_tensor_value_info("classes", TensorProto.INT32, ["batch", "cells"])
    shift = helper.make_node("BitShift", ["codes", "codes"], ["classes"], direction="LEFT")
    model = helper.make_model(helper.make_graph([shift], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])
    monkeypatch.setattr(trt_module.TrtEngine, "_graph", lambda self, key: model)
    with pytest.raises(EngineUnavailable, match="cannot run this model here: TensorRT's ONNX parser .*BitShift"):
        trt_module.TrtEngine(load_step_model("addition"), k=2)


def test_the_simulated_parser_refuses_uint16(monkeypatch, tmp_path):
    """Without the int32 rewrite, a 13-channel sign state's uint16 codes would not parse."""
    install_fakes(monkeypatch, tmp_path)
    monkeypatch.setattr(trt_module, "_trt_types", lambda model: model)
    with pytest.raises(EngineUnavailable, match="UINT16, which TensorRT lacks"):
        trt_module.TrtEngine(load_step_model("multiplication"), k=2)


def test_empty_batches(monkeypatch, tmp_path):
    install_fakes(monkeypatch, tmp_path)
    engine = trt_module.TrtEngine(load_step_model("addition"), k=2)
    batch = engine.start(np.zeros((0, 9), np.uint8))
    assert batch.rows == 0 and batch.advance(2).shape == (0,) and batch.classes().shape == (0, 9)
    states, hot = engine.run_windows(np.zeros((0, 9), np.uint8), None, 2)
    assert states.shape == hot.shape == (0, 9)
    engine.close()


# -- tests of the tests: each mutation of the engine fails a check ------------------------------------
def _mutant_fails(monkeypatch, tmp_path, mutate, model="addition", **fake_options):
    """Run both checks on an engine changed by mutate(engine); -> what each raised (a check that
    raises anything has caught the mutant; the tests below say which failure they expect)."""
    _, cudart = install_fakes(monkeypatch, tmp_path, **fake_options)
    failures = []
    step = load_step_model(model)

    def make(s):
        engine = trt_module.TrtEngine(s, k=4)
        mutate(engine)
        return engine

    for check in (lambda: check_protocol_like_ort(step, make(step), np.random.default_rng(8)),
                  lambda: check_solves_like_ort(model, make, _lines(model, np.random.default_rng(9), 40), cudart)):
        try:
            check()
        except Exception as exc:  # stale reads can fail anywhere downstream
            failures.append(exc)
    return failures


def test_mutant_a_profile_that_does_not_cover_the_batch(monkeypatch, tmp_path):
    profile = trt_module.TrtEngine.profile

    def narrow(self, model):  # rows stop at 2 (the first dimension of every input but the table)
        out = {}
        for name, (low, opt, high) in profile(self, model).items():
            if name != "neighbours":
                opt, high = (min(opt[0], 2), *opt[1:]), (2, *high[1:])
            out[name] = (low, opt, high)
        return out

    monkeypatch.setattr(trt_module.TrtEngine, "profile", narrow)
    failures = _mutant_fails(monkeypatch, tmp_path, lambda engine: None)
    assert len(failures) == 2 and all("refused shape" in str(f) for f in failures), failures


def test_mutant_swapped_copy_directions(monkeypatch, tmp_path):
    def swap(engine):
        engine.h2d, engine.d2h = engine.d2h, engine.h2d

    failures = _mutant_fails(monkeypatch, tmp_path, swap)
    assert len(failures) == 2 and all("cudaMemcpyAsync failed" in str(f) for f in failures), failures


def test_mutant_a_missing_synchronize(monkeypatch, tmp_path):
    monkeypatch.setattr(trt_module.TrtBatch, "_sync", lambda self: None)
    failures = _mutant_fails(monkeypatch, tmp_path, lambda engine: None)
    assert len(failures) == 2, failures
    assert isinstance(failures[0], AssertionError), failures  # the protocol check: stale counts


def test_mutant_zero_activation_memory_taken_for_failure(monkeypatch, tmp_path):
    def strict(self, plan, context):  # the old mistake: 0 read as "TensorRT could not size it"
        need = context.update_device_memory_size_for_shapes()
        if need <= 0:
            raise SeadError("TensorRT could not size its activation memory")
        return need

    monkeypatch.setattr(trt_module.TrtEngine, "activation_bytes", strict)
    failures = _mutant_fails(monkeypatch, tmp_path, lambda engine: None, zero_activation=True)
    assert len(failures) == 2 and all("could not size" in str(f) for f in failures), failures
