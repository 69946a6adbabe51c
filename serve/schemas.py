"""The JSON shapes of the HTTP API (pydantic): they validate requests and document /docs."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sead.runtime.tasks import MAX_STEPS


class SolveRequest(BaseModel):
    """POST /v1/solve with Content-Type: application/json."""

    model_config = ConfigDict(extra="forbid", strict=True)

    problems: list[str] = Field(description="Problem lines in the model's task format, e.g. '123+877'.",
                                examples=[["123+877", "99999999+1"]])
    max_steps: int | None = Field(None, ge=0, le=MAX_STEPS,
                                  description="Step cap per problem (default 2 x tape length + 16; rule110: the "
                                              "most generations a problem may ask); at most the server's --max-steps.")


class ResultRecord(BaseModel):
    output: str | None = Field(description="The answer; null when the problem did not converge.")
    steps: int
    converged: bool


class SolveResponse(BaseModel):
    model: str
    results: list[ResultRecord]


class StreamRecord(BaseModel):
    """One line of an NDJSON response: a result, or an error for that problem (then `error` is set)."""

    index: int | None = Field(None, description="0-based problem index in the stream")
    output: str | None = None
    steps: int | None = None
    converged: bool | None = None
    error: str | None = None
    fatal: bool | None = Field(None, description="true on the last record when the stream was cut short")


class InvalidLine(BaseModel):
    index: int = Field(description="0-based index in `problems`")
    reason: str = Field(description="The same text `sead run` prints for that line")


class ErrorBody(BaseModel):
    error: str = Field(description="A stable code: invalid_problems, malformed_json, invalid_request, timeout, "
                                   "too_large, too_much_work, unsupported_media_type, queue_full, busy, "
                                   "unavailable, internal")
    message: str = Field(description="One line for a human")
    invalid: list[InvalidLine] | None = None
    details: list[dict] | None = None


class ModelInfo(BaseModel):
    model: str
    engine: str
    metadata: dict = Field(description="The exported step's metadata (sead.* keys of the .onnx)")
