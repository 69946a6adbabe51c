"""An exported step (.onnx) and the metadata that says how to use it. numpy + onnx only.

Everything a runtime needs travels in the file's metadata_props under `sead.*` keys, so the .onnx
file alone is enough: the task, tensor names and channel layout, how the answer is read, the
convergence rule, the radius, the training lengths, the parameter count and the source hash.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ModelFileError

METADATA_VERSION = 1
PREFIX = "sead."
DEFAULT_MODELS = ("addition", "parity", "rule110")
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
    inputs: str = "problem (B,C_in,L) float32; state (B,C_s,L) float32, zeros at step 0"
    outputs: str = "next_state (B,C_s,L) float32; logits (B,classes,L) float32 of the input state"
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
        if version != str(METADATA_VERSION):
            raise ModelFileError(f"{source}: sead model format version {version!r} is not supported "
                                 f"(this sead reads version {METADATA_VERSION})")
        unknown = set(data) - set(fields)
        if unknown:
            raise ModelFileError(f"{source}: unknown sead metadata keys {sorted(unknown)}")
        missing = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING} - set(data)
        if missing:
            raise ModelFileError(f"{source}: sead metadata lacks {sorted(missing)}")
        convert = {"int": int, "float": float, "str": str}
        try:
            return cls(**{k: convert[fields[k]](v) for k, v in data.items()})
        except ValueError as exc:
            raise ModelFileError(f"{source}: bad sead metadata ({exc})") from None


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


def resolve_model(name_or_path: str | Path) -> Path:
    """A shipped default's name (addition, parity, rule110) or a path to an exported .onnx."""
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
    """Parse an exported step. ONNX files are protobuf data: loading one never runs code."""
    import onnx

    path = resolve_model(name_or_path)
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends: the file is not an ONNX model
        raise ModelFileError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    meta = StepMetadata.from_props(props, source=str(path))
    names_in = tuple(i.name for i in proto.graph.input)
    names_out = tuple(o.name for o in proto.graph.output)
    if names_in != INPUTS or names_out != OUTPUTS:
        raise ModelFileError(f"{path}: expected inputs {INPUTS} and outputs {OUTPUTS}, found {names_in} and {names_out}")
    return StepModel(path=str(path), proto=proto, metadata=meta)
