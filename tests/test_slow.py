"""Long problems at the sizes the README claims, on held-out inputs. The training generators
(each task's training_line) make random operands of at most 16 digits with some carry chains,
random bit strings with all-zero and single-one ones, random rings of at most 16 cells for at most
6 generations, and products of at most 6 digits (random, unequal, nines, zeros, powers of ten).
So the patterned families here (4545... + 5454..., separate chains in one sum, alternating and
all-one bits, the Rule 110 ether, repunits, 55...5 x 22...2) are never produced, and the rest
(random, unequal lengths, a power of ten) only at sizes thousands of times smaller. Every answer
is checked against the task's exact oracle (Python's exact arithmetic, a direct Rule 110
simulation), never against a model.

Marked slow: deselected unless -m names them. `pytest -m slow` (CI) runs them in about a minute
and a half on 2 cores. The largest sizes (10^6 digits and nines, a 10^6-cell ring, 400-digit
products) are also marked slowest, for `make test-slow` (pytest -m "slow or slowest").

Addition's cells hold column sums a_i + b_i (runtime/tasks/addition.py), so 4545...45 + 5454...55
is the very tape of 99...9 + 1: a carry enters at the last column and crosses every other one.
"""
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sead import Runtime  # noqa: E402
from sead.runtime.tasks import rule110_generation  # noqa: E402

pytestmark = pytest.mark.slow
slowest = pytest.mark.slowest
TAPE_SIZES = [pytest.param(100_000, id="1e5"), pytest.param(1_000_000, marks=slowest, id="1e6")]


@pytest.fixture(scope="module")
def runtimes():
    """runtimes(model, **options) -> a Runtime on 'ort', one per model and options, closed at the end."""
    opened = {}

    def get(model: str, **options) -> Runtime:
        key = (model, tuple(sorted(options.items())))
        if key not in opened:
            opened[key] = Runtime(model, "ort", **options)
        return opened[key]

    yield get
    for rt in opened.values():
        rt.close()


def solve_exact(rt: Runtime, lines: list[str]):
    """Solve lines -> Results, each converged to the task oracle's answer (a failure names the
    line and the first digit that differs, not a million-character diff)."""
    task = rt.task
    results = rt.solve(lines)
    for line, r in zip(lines, results):
        want = task.answer(task.parse(line))
        assert r.converged, f"{_short(line)}: did not converge within {r.steps:,} steps"
        assert r.answer == want, f"{_short(line)}: {_difference(r.answer, want)}"
    return results


def _short(line: str) -> str:
    return line if len(line) <= 60 else f"{line[:25]}...{line[-25:]} ({len(line):,} characters)"


def _difference(got: str, want: str) -> str:
    if len(got) != len(want):
        return f"answer of {len(got):,} characters, expected {len(want):,}"
    i = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
    return f"character {i:,} of {len(want):,} is {got[i]!r}, expected {want[i]!r}"


def text(values: np.ndarray) -> str:
    return (np.asarray(values).astype(np.uint8) + 48).tobytes().decode()


def number(rng: np.random.Generator, digits: int) -> str:
    """A random number of exactly `digits` digits (no leading zero)."""
    return text(np.concatenate([rng.integers(1, 10, 1), rng.integers(0, 10, digits - 1)]))


# -- addition ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", TAPE_SIZES)
def test_addition_one_carry_crosses_every_column(runtimes, n):
    """4545...45 + 5454...55 (either operand first) and 99...9 + 1: every column sums to 9 but the
    last, whose carry crosses all n columns to make 10^n, in exactly n steps: the fewest a radius-1
    rule can take, the leading cell being n cells from the last column's. Without the entering 1
    (4545... + 5454...) the sum is n nines."""
    a, b = "45" * (n // 2), "54" * (n // 2 - 1) + "55"
    rt = runtimes("addition")
    results = solve_exact(rt, [f"{a}+{b}", f"{b}+{a}", "9" * n + "+1", f"{a}+{'54' * (n // 2)}"])
    assert results.answers[:3] == ["1" + "0" * n] * 3 and results.answers[3] == "9" * n
    assert results.steps[:3].tolist() == [n] * 3


def carry_chains(rng: np.random.Generator, n: int, lengths: list[int]) -> str:
    """An n-column sum holding separate carry chains: for each length L, a column summing to 0..8
    (where the chain stops), L columns summing to 9, then one summing to 10..18 (the carry that
    enters). The first chain starts at the top column, so its carry makes a new leading digit;
    every other column sums to 0..8, so no other carry moves."""
    sums = rng.integers(0, 9, n)
    spare = n - sum(lengths) - 2 * len(lengths)
    gaps = rng.multinomial(spare, np.full(len(lengths), 1 / len(lengths)))
    gaps[0] = 0
    at = -1  # the first chain's stop is the leading cell, in front of column 0
    for length, gap in zip(lengths, gaps):
        at += gap
        sums[at + 1: at + 1 + length] = 9
        sums[at + 1 + length] = rng.integers(10, 19)
        at += length + 2
    a = rng.integers(np.maximum(0, sums - 9), np.minimum(9, sums) + 1)
    return f"{text(a)}+{text(sums - a)}"


def test_addition_several_separate_carry_chains_in_one_sum(runtimes):
    """Chains of 30,000, 12,345, 1,000, 100, 9, 2 and 1 columns in one 100,000-digit sum, and
    each carry stops where its chain ends. A carry crosses one column a step, so the sum takes
    at least the longest chain's length; the rule adds at most 2 steps (tests/test_tiles.py)."""
    rng = np.random.default_rng(23)
    lengths = [30_000, 1, 12_345, 2, 1_000, 9, 100]
    lines = [carry_chains(rng, 100_000, lengths), carry_chains(rng, 100_000, lengths[::-1])]
    results = solve_exact(runtimes("addition"), lines)
    assert [len(answer) for answer in results.answers] == [100_001] * 2  # the top chain's new leading digit
    longest = max(lengths)
    assert all(longest < steps <= longest + 2 for steps in results.steps.tolist()), results.steps


def test_addition_a_one_digit_number_and_a_100000_digit_one(runtimes):
    """1-digit + 100,000-digit sums, either operand first; into a long number ending in 50,000
    nines the single digit's carry crosses all of them."""
    rng = np.random.default_rng(5)
    n = 100_000
    long_number = number(rng, n)
    nines_tail = long_number[: n // 2 - 1] + "8" + "9" * (n // 2)
    results = solve_exact(runtimes("addition"), [f"7+{long_number}", f"{long_number}+7", f"0+{long_number}",
                                                 f"1+{nines_tail}", f"{nines_tail}+9"])
    assert results.answers[3] == long_number[: n // 2 - 1] + "9" + "0" * (n // 2)
    assert all(steps >= n // 2 for steps in results.steps[3:].tolist())  # one carry crossed 50,000 columns


@pytest.mark.parametrize("n", [100_000, 1_000_000])
def test_addition_random_sums_of_long_numbers(runtimes, n):
    """Random n-digit sums, and n-digit numbers plus random ones a tenth and a half as long (the
    README's random 1,000,000-digit sums take seconds: CI runs them)."""
    rng = np.random.default_rng(n)
    lines = [f"{number(rng, n)}+{number(rng, n)}", f"{number(rng, n)}+{number(rng, n)}",
             f"{number(rng, n)}+{number(rng, n // 10)}", f"{number(rng, n // 2)}+{number(rng, n)}"]
    solve_exact(runtimes("addition"), lines)


# -- parity --------------------------------------------------------------------------------------

def test_parity_of_patterned_bit_strings(runtimes):
    """Alternating bits (either phase), all ones, all ones but the last, a single 1 at the end,
    and random bits: every answer depends on the first bit, n cells from where it is read."""
    rng, n = np.random.default_rng(1), 100_000
    lines = ["01" * (n // 2), "10" * (n // 2), "1" * n, "1" * (n - 1) + "0", "0" * (n - 1) + "1",
             text(rng.integers(0, 2, n))]
    results = solve_exact(runtimes("parity"), lines)
    assert results.answers[:5] == [str(n // 2 % 2)] * 2 + [str(n % 2), str((n - 1) % 2), "1"]


@pytest.mark.slowest
def test_parity_of_a_million_bits(runtimes):
    n = 1_000_000
    results = solve_exact(runtimes("parity"), ["01" * (n // 2), "0" * (n - 1) + "1"])
    assert results.answers == ["0", "1"]


# -- rule110 -------------------------------------------------------------------------------------

ETHER = "00010011011111"  # Rule 110's periodic background: period 14 in space, 7 in time


def rings(rng: np.random.Generator, cells: int) -> list[str]:
    """Random cells, the ether background, a single live cell, all live cells, and ether with a
    random stretch in the middle (gliders meeting the background)."""
    ether = ETHER * (cells // len(ETHER))
    mixed = ether[: cells // 3] + text(rng.integers(0, 2, cells // 3))
    mixed += ether[len(mixed): len(ether)]
    return [text(rng.integers(0, 2, cells)), ether, "0" * (cells - 1) + "1", "1" * cells, mixed]


@pytest.mark.parametrize("cells, generations", [pytest.param(100_000, 300, id="1e5x300"),
                                                pytest.param(10_000, 1000, id="1e4x1000"),
                                                pytest.param(1_000_000, 300, marks=slowest, id="1e6x300")])
def test_rule110_long_rings_against_direct_simulation(runtimes, cells, generations):
    """Each ring after N generations equals N applications of rule110_generation, and a
    generations task runs exactly N steps."""
    rng = np.random.default_rng(cells + generations)
    tapes = rings(rng, cells)
    results = runtimes("rule110").solve([f"{tape} {generations}" for tape in tapes])
    for tape, r in zip(tapes, results):
        state = np.frombuffer(tape.encode(), np.uint8) - 48
        for _ in range(generations):
            state = rule110_generation(state)
        assert r.converged and r.steps == generations
        assert r.answer == text(state), f"{_short(tape)}: {_difference(r.answer, text(state))}"


# -- multiplication ------------------------------------------------------------------------------

def products(rng: np.random.Generator, n: int) -> list[str]:
    """Repunit x repunit, 55...5 x 22...2, a power of ten times a random number (either side),
    and operands of unequal lengths (n x n/4 and 7 x n)."""
    return [f"{'1' * n}*{'1' * n}", f"{'5' * n}*{'2' * n}", f"1{'0' * (n - 1)}*{number(rng, n)}",
            f"{number(rng, n)}*1{'0' * (n // 2)}", f"{number(rng, n)}*{number(rng, n // 4)}",
            f"{number(rng, 7)}*{number(rng, n)}"]


@pytest.mark.parametrize("n", [pytest.param(50, id="50"), pytest.param(100, id="100"), pytest.param(200, id="200")])
def test_multiplication_up_to_the_verified_size(runtimes, n):
    """Held-out products up to 200 digits, within the shipped model's sead.verified_size (1,000)."""
    rt = runtimes("multiplication")
    assert rt.size_limit == 1000
    results = solve_exact(rt, products(np.random.default_rng(n), n))
    assert results.answers[0] == str(int("1" * n) ** 2)  # 123...n...321 with carries: the oracle's own check


@pytest.mark.slowest
@pytest.mark.parametrize("n", [pytest.param(400, id="400"), pytest.param(1000, id="1000")])
def test_multiplication_at_the_largest_sizes(runtimes, n):
    """The repunit square, 55...5 x 22...2, a power of ten times a random number and unequal
    lengths, at 400 digits and at the verified size itself (1,000: about 2 minutes here)."""
    rng = np.random.default_rng(n)
    lines = products(rng, n)
    solve_exact(runtimes("multiplication"), lines[:3] + lines[4:5])
