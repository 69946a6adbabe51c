"""An exported step (.onnx) and the metadata that says how to use it. numpy + onnx only.

Everything a runtime needs travels in the file's metadata_props under `sead.*` keys, so the .onnx
file alone is enough: the task, tensor names and channel layout, how the answer is read, the
convergence rule, the radius, the training lengths, the parameter count and the source hash.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ModelFileError
from .tasks import TASKS

# 2 added `rank` (grids): version-1 files are tapes and load as rank 1; 3 added `state` (the state's
# code): older files hold sign states; 4 added `verified_size`: older files claim no limit
METADATA_VERSION = 4
ADDED = {"rank": 2, "state": 3, "verified_size": 4}  # each key -> the format version that added it
READ_VERSIONS = {v: {k for k, added in ADDED.items() if added > v} for v in range(1, METADATA_VERSION + 1)}  # -> keys it lacks
STATE_CODES = ("sign", "symbol")
PREFIX = "sead."
INPUTS = ("problem", "state")
OUTPUTS = ("next_state", "logits")


@dataclass(frozen=True)
class StepMetadata:
    format_version: int
    task: str
    sead_version: str
    input_channels: int
    state_channels: int
    classes: int
    boundary: str  # "zeros": a line, pad with empty cells; "ring": wraps, never padded
    convergence: str  # "fixed_point": stop when one step changes nothing; "generations": run N steps
    tolerance: float  # 0.0: the fixed point is exact (the state is discrete)
    radius: int
    train_max_cells: int
    parameters: int
    checkpoint_sha256: str
    model_config: str  # JSON of the training-side ModelConfig
    rank: int = 1  # 1: cells on a tape, (B, C, L); 2: a grid, (B, C, H, W) (from format version 2)
    # the state's code (from format version 3): "sign", each channel -1 or +1; "symbol", a one-hot
    # class per cell (state_channels == classes), which is also its readout
    state: str = "sign"
    # the largest problem size (the task's size: digits of the longer operand for multiplication)
    # at which the model was checked exact when it shipped, where it was not exact at the next
    # size checked; the runtime refuses larger problems unless told otherwise. 0: no limit
    verified_size: int = 0
    inputs: str = "problem (B,C_in,*S) float32; state (B,C_s,*S) float32, zeros at step 0; S = L or H,W"
    outputs: str = "next_state (B,C_s,*S) float32; logits (B,classes,*S) float32 of the input state"
    channels: str = "problem channel 0 is the cell mask (1 real cell, 0 padding); the rest is the task's one-hot code"
    answer: str = "argmax over logits' class axis per cell, decoded by the task codec (sead.runtime.tasks)"

    def to_props(self) -> dict[str, str]:
        return {PREFIX + k: str(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> "StepMetadata":
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        data = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not data:
            raise ModelFileError(f"{source}: not a sead model (no '{PREFIX}*' metadata)")
        version = data.get("format_version")
        lacks = READ_VERSIONS.get(int(version)) if version is not None and version.isdigit() else None
        if lacks is None:
            raise ModelFileError(f"{source}: sead model format version {version!r} is not supported "
                                 f"(this sead reads versions {', '.join(map(str, READ_VERSIONS))})")
        unknown = set(data) - set(fields) | (set(data) & lacks)
        if unknown:
            raise ModelFileError(f"{source}: unknown sead metadata keys {sorted(unknown)}")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING or f.name in ADDED}
        missing = required - lacks - set(data)
        if missing:
            raise ModelFileError(f"{source}: sead metadata lacks {sorted(missing)}")
        convert = {"int": int, "float": float, "str": str}
        try:
            return cls(**{k: convert[fields[k]](v) for k, v in data.items()})
        except ValueError as exc:
            raise ModelFileError(f"{source}: bad sead metadata ({exc})") from None


def cell_axes(rank: int) -> list[str]:
    """The names of a row's cell axes in every sead graph: (length,) on a tape, (height, width) on a grid."""
    return ["length"] if rank == 1 else ["height", "width"]


@dataclass(frozen=True)
class StepModel:
    """A loaded step: the ONNX model proto (no engine yet) and its metadata."""

    path: str
    proto: object  # onnx.ModelProto
    metadata: StepMetadata

    @property
    def opset(self) -> int:
        return next(o.version for o in self.proto.opset_import if o.domain in ("", "ai.onnx"))


def default_model_path(name: str, suffix: str = ".onnx") -> Path:
    return Path(str(resources.files("sead.runtime") / "models" / f"{name}{suffix}"))


# the shipped models: one for each registered task whose model file is installed
DEFAULT_MODELS = tuple(name for name in TASKS if default_model_path(name).is_file())


def resolve_model(name_or_path: str | Path) -> Path:
    """A shipped default's name (DEFAULT_MODELS) or a path to an exported .onnx."""
    text = str(name_or_path)
    if text in DEFAULT_MODELS:
        path = default_model_path(text)
        if not path.is_file():
            raise ModelFileError(f"the shipped model {text!r} is missing from this installation ({path})")
        return path
    path = Path(text)
    if not path.is_file():
        raise ModelFileError(f"{text}: no such model file (give a path to an .onnx, or one of {', '.join(DEFAULT_MODELS)})")
    return path


def load_step_model(name_or_path: str | Path) -> StepModel:
    """Parse an exported step and check it against itself. ONNX files are protobuf data: loading
    one never runs code, and external data is never read (a model that needs it is refused).

    Checked, without running it: only plain initializers and the standard ONNX domain; the tensor
    names, and their channel dims against the metadata; the metadata against the task's codec
    (channels, classes, boundary, convergence); radius, tolerance and parameter count against the
    graph; and `onnx.checker` with its full check. Any failure is a ModelFileError naming the file.
    """
    import onnx

    path = resolve_model(name_or_path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: the file is not an ONNX model
        raise ModelFileError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    _check_storage_and_domains(proto, path)
    props = {p.key: p.value for p in proto.metadata_props}
    meta = StepMetadata.from_props(props, source=str(path))
    _check_io(proto, meta, path)
    _check_task(meta, path)
    _check_rule(proto, meta, path)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, or shape inference's InferenceError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{path}: fails the ONNX checker ({first})") from None
    return StepModel(path=str(path), proto=proto, metadata=meta)


STANDARD_DOMAINS = ("", "ai.onnx")


def _check_storage_and_domains(proto, path: Path) -> None:
    from onnx import TensorProto

    if proto.functions:
        raise ModelFileError(f"{path}: defines its own functions ({proto.functions[0].name}); a sead step uses none")
    bad = [o.domain for o in proto.opset_import if o.domain not in STANDARD_DOMAINS]
    if bad:
        raise ModelFileError(f"{path}: imports operator domain {bad[0]!r}; only the standard ONNX domain is allowed")
    for graph in _graphs(proto.graph):
        if graph.sparse_initializer:
            raise ModelFileError(f"{path}: has sparse initializers; a sead step stores plain ones")
        for node in graph.node:
            if node.domain not in STANDARD_DOMAINS:
                raise ModelFileError(f"{path}: node {node.name or node.op_type!r} is {node.domain}.{node.op_type}; "
                                     f"only the standard ONNX domain is allowed")
        tensors = list(graph.initializer) + [a.t for n in graph.node for a in n.attribute if a.HasField("t")] + \
            [t for n in graph.node for a in n.attribute for t in a.tensors]
        for t in tensors:
            if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
                raise ModelFileError(f"{path}: tensor {t.name!r} keeps its data in another file; "
                                     f"a sead step holds its weights inline")


def _graphs(graph):
    """The graph and every subgraph in its nodes' attributes."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("g"):
                yield from _graphs(a.g)
            for g in a.graphs:
                yield from _graphs(g)


def _check_io(proto, meta: StepMetadata, path: Path) -> None:
    """(B, C, *S) float32 tensors of the metadata's rank whose channel dims are the metadata's."""
    from onnx import TensorProto

    g = proto.graph
    names_in = tuple(i.name for i in g.input)
    names_out = tuple(o.name for o in g.output)
    if names_in != INPUTS or names_out != OUTPUTS:
        raise ModelFileError(f"{path}: expected inputs {INPUTS} and outputs {OUTPUTS}, found {names_in} and {names_out}")
    if meta.rank not in (1, 2):
        raise ModelFileError(f"{path}: sead.rank={meta.rank}; sead runs tapes (1) and grids (2)")
    if meta.state not in STATE_CODES:
        raise ModelFileError(f"{path}: sead.state={meta.state!r}; sead knows {', '.join(STATE_CODES)}")
    if meta.state == "symbol" and meta.state_channels != meta.classes:
        raise ModelFileError(f"{path}: sead.state='symbol' needs one state channel per class ({meta.classes}), "
                             f"not {meta.state_channels}")
    want = {"problem": ("input_channels", meta.input_channels), "state": ("state_channels", meta.state_channels),
            "next_state": ("state_channels", meta.state_channels), "logits": ("classes", meta.classes)}
    for value in list(g.input) + list(g.output):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        key, channels = want[value.name]
        if tensor.elem_type != TensorProto.FLOAT or len(dims) != 2 + meta.rank:
            layout = "(B, C, L)" if meta.rank == 1 else "(B, C, H, W)"
            raise ModelFileError(f"{path}: {value.name} must be a {layout} float32 tensor (sead.rank={meta.rank})")
        if dims[1] != channels:
            raise ModelFileError(f"{path}: {value.name} has {dims[1] if dims[1] is not None else 'a free number of'} "
                                 f"channels, but sead.{key}={channels}")


def _check_task(meta: StepMetadata, path: Path) -> None:
    """The metadata must describe the task's codec: otherwise answers would be decoded wrongly."""
    from .tasks import TASKS

    task = TASKS.get(meta.task)
    if task is None:
        raise ModelFileError(f"{path}: sead.task={meta.task!r} is not a known task ({', '.join(TASKS)})")
    for key in ("rank", "input_channels", "classes", "boundary", "convergence"):
        got, want = getattr(meta, key), getattr(task, key)
        if got != want:
            raise ModelFileError(f"{path}: sead.{key}={got!r}, but task {task.name!r} has {want!r}")
    if meta.tolerance != 0:
        raise ModelFileError(f"{path}: sead.tolerance={meta.tolerance!r}; the state is discrete, so it must be 0")
    if meta.verified_size < 0:
        raise ModelFileError(f"{path}: sead.verified_size={meta.verified_size}; a size limit is 0 (none) or more")


def parameter_count(proto) -> int:
    """Learned weights: the convolutions' weight and bias tensors (not the graph's small constants)."""
    sizes = {t.name: math.prod(t.dims) for t in proto.graph.initializer}
    names = {name for n in proto.graph.node if n.op_type == "Conv" for name in n.input[1:3]}
    return sum(sizes.get(name, 0) for name in names)


def _check_rule(proto, meta: StepMetadata, path: Path) -> None:
    """Every convolution's weights are stored tensors; the rule's first one, over [problem; state],
    is 2 x radius + 1 cells wide along each of the rank's axes; the metadata's parameter count is
    the graph's."""
    g = proto.graph
    dims = {t.name: list(t.dims) for t in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    for conv in convs:
        if len(conv.input) < 3 or any(name not in dims for name in conv.input[1:3]):
            raise ModelFileError(f"{path}: convolution {conv.name or conv.output[0]!r} lacks a stored weight and bias")
    if meta.radius < 1:
        raise ModelFileError(f"{path}: sead.radius={meta.radius}; a rule must see at least one neighbour (radius >= 1)")
    needed, on_path = {"next_state"}, []
    for node in reversed(g.node):  # the convolutions next_state depends on; the last found is the first run
        if needed & set(node.output):
            needed |= set(node.input)
            on_path += [node] if node.op_type == "Conv" else []
    rule = on_path[-1] if on_path else None
    shape = dims[rule.input[1]] if rule is not None else []
    width = 2 * meta.radius + 1
    if len(shape) != 2 + meta.rank or shape[1] != meta.input_channels + meta.state_channels or \
            any(d != width for d in shape[2:]):
        raise ModelFileError(f"{path}: sead.radius={meta.radius} with {meta.input_channels}+{meta.state_channels} "
                             f"channels needs a rule convolution of width {width} over "
                             f"{meta.input_channels + meta.state_channels} channels; the graph's weight is {shape}")
    count = parameter_count(proto)
    if count != meta.parameters:
        raise ModelFileError(f"{path}: sead.parameters={meta.parameters}, but the graph holds {count}")
