"""Task codecs: parsing, encoding, decoding, padding and the oracles (numpy only)."""
import numpy as np
import pytest

from sead.runtime.errors import InputError
from sead.runtime.tasks import get_task, rule110_generation

addition, parity, rule110 = get_task("addition"), get_task("parity"), get_task("rule110")


@pytest.mark.parametrize("line, answer", [
    ("1+1", "2"), ("0+0", "0"), ("000+0000", "0"), ("99999+1", "100000"), ("12 + 345", "357"),
    ("007+3", "10"), ("5+5", "10"), ("123456789012345678901234567890+1", "123456789012345678901234567891"),
])
def test_addition_answers(line, answer):
    assert addition.answer(addition.parse(line)) == answer


def test_addition_encoding_holds_the_column_sums():
    rng = np.random.default_rng(0)
    for _ in range(200):
        line = addition.random_line(rng, int(rng.integers(1, 30)))
        p = addition.parse(line)
        cells = addition.encode(p)
        assert cells.shape == (20, p.length) and cells.dtype == np.float32
        assert (cells[0] == 1).all() and (cells[1:].sum(0) == 1).all()
        columns = cells[1:].argmax(0)
        assert sum(int(c) * 10 ** i for i, c in enumerate(columns[::-1])) == int(addition.answer(p))
        assert addition.decode(addition.targets(p), p) == addition.answer(p)


def test_parity_and_rule110_decode_their_targets():
    rng = np.random.default_rng(1)
    for _ in range(100):
        p = parity.parse(parity.random_line(rng, int(rng.integers(1, 40))))
        assert parity.decode(parity.targets(p), p) == str(p.text.count("1") % 2)
        assert list(parity.targets(p)) == [p.text[: i + 1].count("1") % 2 for i in range(p.length)]
        r = rule110.parse(rule110.random_line(rng, int(rng.integers(1, 40)), int(rng.integers(0, 5))))
        assert rule110.decode(rule110.targets(r), r) == rule110.answer(r)


def test_rule110_oracle_matches_the_rule_table():
    # Wolfram's table: neighbourhoods 111..000 -> 0,1,1,0,1,1,1,0
    table = {"111": 0, "110": 1, "101": 1, "100": 0, "011": 1, "010": 1, "001": 1, "000": 0}
    rng = np.random.default_rng(2)
    for n in (1, 2, 3, 7, 30):
        tape = rng.integers(0, 2, n)
        nxt = rule110_generation(tape)
        for i in range(n):
            key = f"{tape[i - 1]}{tape[i]}{tape[(i + 1) % n]}"
            assert nxt[i] == table[key]


def test_rule110_default_and_explicit_generations():
    assert rule110.parse("0110").generations == 1
    assert rule110.parse("0110 0").generations == 0
    assert rule110.answer(rule110.parse("0110 0")) == "0110"
    assert rule110.parse("0110 12").generations == 12


@pytest.mark.parametrize("task, line, words", [
    (addition, "", "blank line"),
    (addition, "12", "one '+'"),
    (addition, "1+2+3", "one '+'"),
    (addition, "+5", "first operand is empty"),
    (addition, "5+", "second operand is empty"),
    (addition, "1a+2", "'a' at position 2"),
    (addition, "\u0663+1", "only ASCII digits"),  # ARABIC-INDIC DIGIT THREE: isdigit() but not ASCII
    (addition, "1\t+2", "'\\t'"),
    (addition, "-1+2", "'-'"),
    (parity, "", "blank line"),
    (parity, "0120", "'2' at position 3"),
    (parity, "01 0", "' '"),
    (rule110, "0110 x", "number of generations"),
    (rule110, "0110  3", "one space"),
    (rule110, "0110 3 4", "one space"),
    (rule110, "0110 -3", "'-'"),
    (rule110, "01\u00b9", "'\u00b9'"),
])
def test_bad_lines_name_the_problem(task, line, words):
    with pytest.raises(InputError) as err:
        task.parse(line)
    assert words in str(err.value)


def test_boundaries():
    assert rule110.boundary == "ring" and addition.boundary == "zeros" and parity.boundary == "zeros"


def test_unknown_task():
    with pytest.raises(InputError, match="unknown task"):
        get_task("division")


def test_long_addition_oracle_agrees_with_python_ints():
    import sys

    sys.set_int_max_str_digits(0)
    rng = np.random.default_rng(5)
    for n in (3999, 4000, 4500, 9000):
        p = addition.parse(addition.random_line(rng, n))
        assert addition.answer(p) == str(int(p.a) + int(p.b))
    p = addition.parse("0" * 5000 + "+" + "0" * 4999)
    assert addition.answer(p) == "0"
    p = addition.parse("9" * 5000 + "+1")
    assert addition.answer(p) == "1" + "0" * 5000
    sys.set_int_max_str_digits(4300)
