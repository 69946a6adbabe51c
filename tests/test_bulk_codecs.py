"""The bulk codec (runtime/tasks: Problems, parse_many, codes, decode_classes): each task's fast
path equals the generic one built on parse / encode_cells / decode_many (same problems, same
first error and reason, same codes, same answers), and answers decoded from the targets are the
oracle's. No timings here: speed is measured in bench code, not asserted."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from sead.runtime.errors import InputError, InternalError  # noqa: E402
from sead.runtime.tasks import Parsed, Problems, Task, get_task  # noqa: E402
from sead.runtime.tasks.base import BITS, check_symbols, digit_rows, not_blank, symbol_texts  # noqa: E402

TASK_NAMES = ["addition", "parity", "rule110", "multiplication"]
SETTINGS = settings(max_examples=150, deadline=None, database=None)


# -- lines: valid ones of every task, and what a careless parser would let through ---------------
def digit_strings(max_size: int = 30):
    """Decimal digits, leading zeros common, lengths skewed short with a long tail."""
    length = st.one_of(st.integers(1, 3), st.integers(1, max_size), st.sampled_from([200, 2100]))
    return length.flatmap(lambda n: st.one_of(st.text("0123456789", min_size=n, max_size=n),
                                              st.text("0", min_size=n, max_size=n)))


def spaced(op: str):
    """'A op B', spaces around op now and then."""
    pad = st.sampled_from(["", "", "", " ", "  "])
    return st.tuples(pad, digit_strings(), pad, pad, digit_strings(), pad).map(
        lambda t: f"{t[0]}{t[1]}{t[2]}{op}{t[3]}{t[4]}{t[5]}")


BIT_STRINGS = st.one_of(st.text("01", min_size=1, max_size=40), st.sampled_from(["0" * 2100, "1" * 2049]))
GENERATIONS = st.one_of(st.integers(0, 70).map(str), st.from_regex(r"\A0{0,20}[0-9]{1,12}\Z"),
                        st.sampled_from(["1000000000000", "0001000000000000", "0" * 40 + "999999999999"]))
VALID = {
    "addition": spaced("+"),
    "multiplication": spaced("*").filter(lambda line: len(line) < 200),  # grids grow as n_a * n_b
    "parity": BIT_STRINGS,
    "rule110": st.one_of(BIT_STRINGS, st.tuples(BIT_STRINGS, GENERATIONS).map(" ".join)),
}
TROUBLE = "0123456789+* \r\n\t\x00\u0663\u00b9\ufeff\u00a0é-x"
EDGES = {  # bad lines near the checks' boundaries
    "addition": ["+", "1+", "+1", "1++2", "1 2+3", "1+2 3", " + ", "1+2\r", "12*3"],
    "multiplication": ["*", "1*", "*1", "1**2", "1 2*3", "12+3"],
    "parity": ["", " ", "0 1", "012", "0\r", "1\n0"],
    "rule110": ["0 1000000000001", "01 99999999999999", "1 00000000000001000000000001", "01 2 3", "01  2", " 01",
                "01 ", "21 3", "0\n1", "01 1\r"],
}


@st.composite
def nearly_valid(draw, task: str) -> str:
    """A valid line with one or two characters inserted, replaced or deleted."""
    line = draw(VALID[task])
    for _ in range(draw(st.integers(1, 2))):
        pos = draw(st.integers(0, len(line)))
        junk = draw(st.sampled_from(["", *TROUBLE]))
        line = line[:pos] + junk + line[pos + draw(st.integers(0, 1)):]
    return line


def lines_of(task: str, valid_only: bool = False):
    valid = VALID[task]
    if valid_only:
        return st.lists(valid, max_size=12)
    line = st.one_of(valid, valid, valid, nearly_valid(task), st.sampled_from(EDGES[task]),
                     st.text(TROUBLE, max_size=8), st.text(max_size=6))
    return st.lists(line, max_size=12)


# -- the generic path, as Task defines it, is the reference ------------------------------------
def generic_parse(task: Task, lines: list[str]):
    try:
        return Task.parse_many(task, lines)
    except InputError as exc:
        return (exc.reason, exc.line)


def fast_parse(task: Task, lines: list[str]):
    try:
        return task.parse_many(lines)
    except InputError as exc:
        return (exc.reason, exc.line)


def first_error(task: Task, lines: list[str]):
    for number, line in enumerate(lines, 1):
        try:
            task.parse(line)
        except InputError as exc:
            return exc.reason, number
    return None


def padded_shape(problems: Problems, index: np.ndarray, extra: int) -> tuple[int, ...]:
    if len(index) == 0:
        return (extra,) * problems.task.rank
    return tuple(int(v) + extra for v in problems.shapes[index].max(0))


def target_classes(task: Task, parsed: list[Parsed], shape: tuple[int, ...]) -> np.ndarray:
    """(B, *shape) uint8: each problem's wanted readout classes, padded with zeros."""
    classes = np.zeros((len(parsed), *shape), np.uint8)
    for row, p in zip(classes, parsed):
        target = task.targets(p)
        row[tuple(slice(0, s) for s in target.shape)] = target
    return classes


def check_same_problems(task: Task, fast: Problems, generic: Problems, lines: list[str]) -> None:
    assert len(fast) == len(generic) == len(lines)
    assert fast.task is task and fast.lines == generic.lines == lines
    for name in ("lengths", "shapes", "sizes", "diameters"):
        mine, reference = getattr(fast, name), getattr(generic, name)
        assert mine.dtype == reference.dtype == np.int64, name
        assert np.array_equal(mine, reference), name
    assert fast.shapes.shape == (len(lines), task.rank)
    if task.convergence == "generations":
        assert fast.generations.dtype == np.int64 and np.array_equal(fast.generations, generic.generations)
    else:
        assert fast.generations is None and generic.generations is None
    assert [fast.parsed(i) for i in range(len(fast))] == [task.parse(line) for line in lines]


def check_same_codec(task: Task, fast: Problems, generic: Problems, index: np.ndarray, extra: int, seed: int) -> None:
    """codes and decode_classes of the fast layout equal encode_cells + 1 and decode_many."""
    shape = padded_shape(fast, index, extra)
    parsed = [task.parse(fast.lines[i]) for i in index.tolist()]
    want = (task.encode_cells(parsed, shape[0] if task.rank == 1 else shape).astype(np.int16) + 1).astype(np.uint8)
    for problems in (fast, generic):
        codes = task.codes(problems, index, shape)
        assert codes.dtype == np.uint8 and codes.shape == (len(index), *shape)
        assert np.array_equal(codes, want)
    rng = np.random.default_rng(seed)
    for classes in (rng.integers(0, task.classes, (len(index), *shape), dtype=np.uint8),
                    np.zeros((len(index), *shape), np.uint8)):
        assert task.decode_classes(classes, fast, index) == task.decode_many(classes, parsed)
        assert task.decode_classes(classes, generic, index) == task.decode_many(classes, parsed)


def check_oracle(task: Task, problems: Problems, index: np.ndarray) -> None:
    """Decoding each problem's targets gives the oracle's answer."""
    index = np.array([i for i in index.tolist() if (problems.generations is None or problems.generations[i] <= 64)
                      and problems.lengths[i] <= 3000], np.int64)
    parsed = [problems.parsed(i) for i in index.tolist()]
    classes = target_classes(task, parsed, padded_shape(problems, index, 1))
    assert task.decode_classes(classes, problems, index) == [task.answer(p) for p in parsed]


# -- properties ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASK_NAMES)
@SETTINGS
@given(data=st.data())
def test_parse_many_accepts_what_parse_accepts_and_names_the_same_first_error(name, data):
    task = get_task(name)
    lines = data.draw(lines_of(name))
    fast, generic = fast_parse(task, lines), generic_parse(task, lines)
    error = first_error(task, lines)
    if error is not None:
        assert fast == generic == error
        return
    check_same_problems(task, fast, generic, lines)


@pytest.mark.parametrize("name", TASK_NAMES)
@SETTINGS
@given(data=st.data())
def test_codes_and_decode_classes_equal_the_per_problem_codec(name, data):
    task = get_task(name)
    lines = data.draw(lines_of(name, valid_only=True))
    fast, generic = task.parse_many(lines), Task.parse_many(task, lines)
    check_same_problems(task, fast, generic, lines)
    index = np.array(data.draw(st.lists(st.integers(0, max(len(lines) - 1, 0)), max_size=len(lines) + 3)
                               if lines else st.just([])), np.int64)
    extra = data.draw(st.sampled_from([0, 0, 1, 7]))
    check_same_codec(task, fast, generic, index, extra, seed=len(lines) + extra)
    check_same_codec(task, fast.take(index), generic.take(index), np.arange(len(index)), extra, seed=1)
    check_oracle(task, fast, np.arange(len(fast)))


# -- the layouts the fast paths special-case ---------------------------------------------------
def random_lines(name: str, sizes, rng: np.random.Generator) -> list[str]:
    task = get_task(name)
    return [task.random_line(rng, int(size)) for size in sizes]


@pytest.mark.parametrize("name", ["addition", "parity", "rule110"])
def test_one_layout_for_every_row(name):
    """All operands alike (a bucket of equal problems): the plain-gather branch."""
    task, rng = get_task(name), np.random.default_rng(0)
    if name == "addition":
        lines = [f"{rng.integers(10**15, 10**16)}+{rng.integers(10**15, 10**16)}" for _ in range(300)]
    else:
        lines = [task.random_line(rng, 17) for _ in range(300)]
    fast, generic = task.parse_many(lines), Task.parse_many(task, lines)
    assert fast.fields is not None
    check_same_problems(task, fast, generic, lines)
    everything = np.arange(len(lines))
    check_same_codec(task, fast, generic, everything, 1, seed=0)
    check_oracle(task, fast, everything)


@pytest.mark.parametrize("name", ["addition", "parity", "rule110"])
def test_long_rows_mixed_with_short_ones(name):
    """Rows of 2**16 cells or more index their cells with uint64, not uint16."""
    task, rng = get_task(name), np.random.default_rng(1)
    lines = random_lines(name, [2**16 + 5, 3, 1, 2100, 40], rng)
    fast, generic = task.parse_many(lines), Task.parse_many(task, lines)
    check_same_problems(task, fast, generic, lines)
    index = np.array([3, 0, 1, 4, 2, 0])
    check_same_codec(task, fast, generic, index, 0, seed=2)
    check_oracle(task, fast, np.arange(len(lines)))


@pytest.mark.parametrize("name", ["addition", "parity", "rule110"])
def test_a_line_of_a_million_cells(name):
    task, rng = get_task(name), np.random.default_rng(2)
    (line,) = random_lines(name, [10**6], rng)
    if name == "addition":
        line = line.split("+")[0] + "+" + "9" * 999_000  # very unequal operands
    problems = task.parse_many([line])
    p = task.parse(line)
    assert problems.lengths.tolist() == [p.length] and problems.fields is not None
    one = np.zeros(1, np.int64)
    codes = task.codes(problems, one, (p.length + 3,))
    assert np.array_equal(codes[0], (task.encode_cells([p], p.length + 3)[0].astype(np.int16) + 1))
    classes = target_classes(task, [p], (p.length + 3,))
    answer = task.decode_classes(classes, problems, one)
    assert answer == task.decode_many(classes, [p]) == [task.answer(p)]


def test_spaced_lines_among_plain_ones_keep_the_fast_layout():
    addition = get_task("addition")
    lines = ["12+34", " 5 +  600 ", "007+3", "1 + 2"]
    problems = addition.parse_many(lines)
    assert problems.fields is not None
    assert problems.lengths.tolist() == [3, 4, 4, 2]
    codes = addition.codes(problems, np.arange(4), (5,))
    assert codes.tolist() == [[1, 5, 7, 0, 0], [1, 7, 1, 6, 0], [1, 1, 1, 11, 0], [1, 4, 0, 0, 0]]
    classes = np.array([[0, 4, 6, 0, 0], [0, 6, 0, 5, 0], [0, 0, 1, 0, 0], [3, 0, 0, 0, 0]], np.uint8)
    assert addition.decode_classes(classes, problems, np.arange(4)) == ["46", "605", "10", "30"]


@pytest.mark.parametrize("name, lines, reason, number", [
    ("addition", ["1+1", "2+2", "1+2+3", "+"], "expected one '+' in 'A+B', found 2", 3),
    ("addition", ["1+1", "", "\u0663+1"], "blank line; expected 'A+B'", 2),
    ("addition", ["1+1", "\u0663+1", ""],
     "the first operand has '\u0663' at position 1; only ASCII digits are allowed", 2),
    ("addition", ["1+1", "1\n+2"], "the first operand has '\\n' at position 2; only ASCII digits are allowed", 2),
    ("addition", ["1+1\r"], "line endings are bare CR (old Mac); convert to LF", 1),
    ("parity", ["0", "1", "012"], "the bit string has '2' at position 3; only '0' and '1' are allowed", 3),
    ("rule110", ["01 1", "01 1000000000001"],
     "the number of generations 1000000000001 is above the limit of 1,000,000,000,000", 2),
    ("rule110", ["01 3", "02 3"], "the tape has '2' at position 2; only '0' and '1' are allowed", 2),
    ("rule110", ["01 ", "0"], "expected 'BITS' or 'BITS N' separated by one space", 1),
])
def test_the_first_bad_line_is_named_with_its_number(name, lines, reason, number):
    with pytest.raises(InputError) as err:
        get_task(name).parse_many(lines)
    assert (err.value.reason, err.value.line) == (reason, number)
    assert str(err.value) == f"<input>:{number}: {reason}"


def test_leading_zeros_in_the_generations_are_parsed_exactly():
    rule110 = get_task("rule110")
    problems = rule110.parse_many(["0110 " + "0" * 30 + "7", "1 0000000000000", "1 1000000000000", "10"])
    assert problems.generations.tolist() == [7, 0, 10**12, 1]
    assert problems.lengths.tolist() == [4, 1, 1, 2]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_no_lines(name):
    task = get_task(name)
    problems = task.parse_many([])
    assert len(problems) == 0 and problems.lengths.shape == (0,) and problems.shapes.shape == (0, task.rank)
    none = np.zeros(0, np.int64)
    shape = (4,) * task.rank
    assert task.codes(problems, none, shape).shape == (0, *shape)
    assert task.decode_classes(np.zeros((0, *shape), np.uint8), problems, none) == []


def test_from_parsed_and_take():
    addition = get_task("addition")
    parsed = [addition.parse(line) for line in ["1+1", "99+1", "123+4"]]
    problems = Problems.from_parsed(addition, parsed)
    assert problems.lines == ["1+1", "99+1", "123+4"] and problems.lengths.tolist() == [2, 3, 4]
    assert problems.fields is None and problems.parsed(1) is parsed[1]
    picked = problems.take(np.array([2, 0, 2]))
    assert picked.lines == ["123+4", "1+1", "123+4"] and picked.lengths.tolist() == [4, 2, 4]
    assert [picked.parsed(i) for i in range(3)] == [parsed[2], parsed[0], parsed[2]]
    classes = np.array([[0, 1, 2, 7], [0, 2, 0, 0], [0, 0, 0, 0]], np.uint8)
    assert addition.decode_classes(classes, picked, np.arange(3)) == ["127", "2", "0"]
    fast = addition.parse_many(["1+1", "99+1", "123+4"]).take(np.array([2, 0, 2]))
    assert np.array_equal(addition.codes(fast, np.arange(3), (5,)), addition.codes(picked, np.arange(3), (5,)))


class Invert(Task):
    """A task that defines only the per-problem codec: the bulk one comes from Task's defaults."""

    name = "invert-bulk"
    input_channels = 3
    classes = 2
    convergence = "fixed_point"
    boundary = "zeros"

    def parse(self, line):
        not_blank(line, "a string of 0/1 bits")
        check_symbols(line, "the bit string", BITS)
        return Parsed(text=line, length=len(line))

    def encode_cells(self, problems, length):
        return digit_rows([q.text for q in problems], length)

    def decode_many(self, symbols, problems):
        return symbol_texts(symbols, problems)

    def answer(self, p):
        return p.text.translate(str.maketrans("01", "10"))


def test_a_new_task_gets_the_bulk_codec_from_its_per_problem_codec():
    invert = Invert()
    problems = invert.parse_many(["0110", "1", "00"])
    assert problems.lengths.tolist() == [4, 1, 2] and problems.shapes.tolist() == [[4], [1], [2]]
    assert problems.sizes.tolist() == [4, 1, 2] and problems.generations is None
    assert invert.codes(problems, np.array([1, 0]), (5,)).tolist() == [[2, 0, 0, 0, 0], [1, 2, 2, 1, 0]]
    classes = np.array([[1, 0, 0, 1, 1], [0, 1, 0, 0, 0]], np.uint8)
    assert invert.decode_classes(classes, problems, np.array([0, 2])) == ["1001", "01"]
    with pytest.raises(InputError) as err:
        invert.parse_many(["01", "0 1"])
    assert err.value.line == 2
    assert err.value.reason == "the bit string has ' ' at position 2; only '0' and '1' are allowed"


def test_a_line_past_ascii_is_named_after_the_lines_before_it():
    addition = get_task("addition")
    with pytest.raises(InputError) as err:
        addition.parse_many(["1+1"] * 1000 + ["\u0663+1", "x"])
    assert err.value.line == 1001 and "'\u0663' at position 1" in err.value.reason
    with pytest.raises(InputError) as err:
        addition.parse_many(["1+1", "1+x", "\u0663+1"])
    assert err.value.line == 2 and "'x' at position 1" in err.value.reason


@pytest.mark.parametrize("name", ["addition", "parity", "rule110", "multiplication"])
def test_rows_too_short_for_a_problem_are_refused(name):
    """A row narrower than its problem would drop cells: a bug of the caller's, said so."""
    task = get_task(name)
    problems = task.parse_many(task.canonical_lines())
    longest = int(problems.lengths.argmax())
    short = tuple(int(v) - 1 for v in problems.shapes[longest])
    for layout in (problems, Problems.from_parsed(task, [problems.parsed(i) for i in range(len(problems))])):
        with pytest.raises(InternalError, match="does not fit rows of shape"):
            task.codes(layout, np.array([longest]), short)
