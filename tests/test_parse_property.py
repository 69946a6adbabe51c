"""Property: every task's parser, fed any text or bytes (through lines.iter_lines), either parses or
raises InputError, never anything else; a line parses exactly when an independent regular
expression says it is valid, and its answer is the oracle's (Python ints, counts, a plain-Python
Rule 110), never computed by the code under test."""
import io
import re

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from sead.runtime.errors import InputError  # noqa: E402
from sead.runtime.lines import iter_lines  # noqa: E402
from sead.runtime.tasks import MAX_STEPS, get_task  # noqa: E402

ADDITION = re.compile(r" *([0-9]+) *\+ *([0-9]+) *")
MULTIPLICATION = re.compile(r" *([0-9]+) *\* *([0-9]+) *")
PARITY = re.compile(r"[01]+")
RULE110 = re.compile(r"([01]+)(?: ([0-9]+))?")
SETTINGS = settings(max_examples=100, deadline=None, database=None)

VALID = st.one_of(st.from_regex(r"\A ?[0-9]{1,12} ?\+ ?[0-9]{1,12} ?\Z"), st.from_regex(r"\A ?[0-9]{1,12} ?\* ?[0-9]{1,12} ?\Z"), st.from_regex(r"\A[01]{1,12}( [0-9]{1,3})?\Z"),
                  st.from_regex(r"\A[01]{1,4} [0-9]{12,14}\Z"))  # generations around the bound, 10^12
# what Python's int() or str.strip() would quietly accept, or a careless parser let through
TROUBLE = " \t\r\x00\x0b\x1c\u0663\ufeff\u00a0\u2003+*-_x01"


@st.composite
def nearly_valid(draw) -> str:
    """A valid line with one or two characters inserted or replaced."""
    line = draw(VALID)
    for _ in range(draw(st.integers(1, 2))):
        pos = draw(st.integers(0, len(line)))
        junk = draw(st.sampled_from(TROUBLE))
        line = line[:pos] + junk + line[pos + draw(st.integers(0, 1)):]
    return line


LINES = st.one_of(st.text(max_size=24), VALID, nearly_valid())
BYTES = st.one_of(st.binary(max_size=48), st.lists(LINES, max_size=5).map(lambda lines: "\n".join(lines).encode()),
                  st.lists(VALID, max_size=4).map(lambda lines: b"\xef\xbb\xbf" + "\r\n".join(lines).encode()))


def rule110(bits: str, generations: int) -> str:
    cells = [int(c) for c in bits]
    for _ in range(generations):
        n = len(cells)
        cells = [(110 >> (4 * cells[i - 1] + 2 * cells[i] + cells[(i + 1) % n])) & 1 for i in range(n)]
    return "".join(map(str, cells))


def expected(task: str, line: str):
    """-> (valid, answer or None) by the regular expression and the oracle alone."""
    if task == "addition":
        m = ADDITION.fullmatch(line)
        return (True, str(int(m[1]) + int(m[2]))) if m else (False, None)
    if task == "multiplication":
        m = MULTIPLICATION.fullmatch(line)
        return (True, str(int(m[1]) * int(m[2]))) if m else (False, None)
    if task == "parity":
        return (True, str(line.count("1") % 2)) if PARITY.fullmatch(line) else (False, None)
    m = RULE110.fullmatch(line)
    if not m or (m[2] is not None and int(m[2]) > MAX_STEPS):
        return False, None
    generations = 1 if m[2] is None else int(m[2])
    return True, rule110(m[1], generations) if generations <= 64 else None


def check(task_name: str, line: str) -> None:
    task = get_task(task_name)
    valid, answer = expected(task_name, line)
    try:
        parsed = task.parse(line)
    except InputError as exc:
        assert not valid, f"{line!r} is valid but was refused: {exc}"
        assert exc.reason and "\n" not in exc.reason
        return
    assert valid, f"{line!r} is invalid but parsed"
    if answer is not None:
        assert task.answer(parsed) == answer


@pytest.mark.parametrize("task", ["addition", "parity", "rule110", "multiplication"])
@SETTINGS
@given(line=LINES)
def test_any_text_parses_or_raises_input_error(task, line):
    check(task, line)


@pytest.mark.parametrize("task", ["addition", "parity", "rule110", "multiplication"])
@SETTINGS
@given(data=BYTES)
def test_any_bytes_through_iter_lines_parse_or_raise_input_error(task, data):
    lines = list(iter_lines(io.BytesIO(data)))
    assert [n for n, _ in lines] == list(range(1, len(lines) + 1))
    assert len(lines) == data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    if data.startswith(b"\xef\xbb\xbf"):  # the byte-order mark is not part of line 1; a second one is its text
        assert lines[0][1].startswith("\ufeff") == data[3:].startswith(b"\xef\xbb\xbf")
    for _, text in lines:
        assert "\n" not in text
        check(task, text)


@pytest.mark.parametrize("task", ["addition", "parity", "rule110", "multiplication"])
@SETTINGS
@given(lines=st.lists(LINES, max_size=6))
def test_parse_many_refuses_the_first_invalid_line_and_decodes_the_oracles_answers(task, lines):
    """In bulk: the first line the regular expression refuses is the one named; otherwise the
    answers decoded from each problem's targets are the oracle's."""
    codec = get_task(task)
    verdicts = [expected(task, line) for line in lines]
    first_bad = next((k for k, (valid, _) in enumerate(verdicts) if not valid), None)
    try:
        problems = codec.parse_many(lines)
    except InputError as exc:
        assert first_bad is not None and exc.line == first_bad + 1, f"{lines!r}: {exc}"
        return
    assert first_bad is None, f"{lines!r}: line {first_bad + 1} is invalid but parsed"
    known = np.array([k for k, (_, answer) in enumerate(verdicts) if answer is not None], np.int64)
    if len(known) == 0:
        return
    shape = tuple(int(v) for v in problems.shapes[known].max(0))
    classes = np.zeros((len(known), *shape), np.uint8)
    for row, k in zip(classes, known.tolist()):
        target = codec.targets(problems.parsed(k))
        row[tuple(slice(0, s) for s in target.shape)] = target
    assert codec.decode_classes(classes, problems, known) == [verdicts[k][1] for k in known.tolist()]
