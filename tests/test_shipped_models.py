"""The shipped default models are exact: checked against Python integers, counts and direct
simulation of Rule 110, never against the model itself."""
import numpy as np
import pytest

from sead.runtime.model_file import default_model_path, load_step_model
from sead.runtime import Runtime
from sead.runtime.tasks import get_task
from sead.runtime.tasks.base import random_digits

pytestmark = pytest.mark.skipif(not all(default_model_path(t).is_file() for t in ("addition", "parity", "rule110", "multiplication")),
                                reason="shipped models not built (python -m sead.train.ship)")


def _check(task_name: str, lines: list[str]):
    task = get_task(task_name)
    results = Runtime(task_name, engine="ort").solve(lines)
    wrong = [(line, r) for line, r in zip(lines, results) if not r.converged or r.answer != task.answer(task.parse(line))]
    assert not wrong, f"{len(wrong)} wrong, e.g. {wrong[:3]}"
    return results


def test_addition_exact_up_to_64_digits():
    rng = np.random.default_rng(2024)
    task = get_task("addition")
    lines = [task.random_line(rng, int(n)) for n in rng.integers(1, 65, 600)]
    lines += [f"{'9' * n}+1" for n in range(1, 65)] + [f"1+{'9' * n}" for n in range(1, 65)]
    lines += ["0+0", "0000+0", "5+5", "18446744073709551615+1"]
    results = _check("addition", lines)
    assert max(r.steps for r in results[:600]) <= 8  # steps follow the carry chain, not the length


def test_addition_carry_chains_of_200_take_about_200_steps():
    lines = ["9" * 200 + "+1", "1+" + "9" * 200, "9" * 199 + "5+5", "4" * 200 + "+" + "5" * 199 + "6"]
    results = _check("addition", lines)
    assert all(200 <= r.steps <= 202 for r in results)  # one carry crosses the tape, a cell per step


def test_parity_exact_at_training_lengths_and_beyond():
    rng = np.random.default_rng(7)
    task = get_task("parity")
    lines = [task.random_line(rng, int(n)) for n in rng.integers(1, 65, 500)]
    lines += ["0" * n for n in (1, 16, 64)] + ["0" * 30 + "1" + "0" * 33, "1" + "0" * 63, "0" * 63 + "1"]
    _check("parity", lines)


def test_rule110_exact_for_many_generations():
    rng = np.random.default_rng(11)
    task = get_task("rule110")
    lines = [task.random_line(rng, int(n), int(g)) for n, g in zip(rng.integers(1, 65, 300), rng.integers(0, 200, 300))]
    results = _check("rule110", lines)
    assert [r.steps for r in results] == [task.parse(line).generations for line in lines]


def test_rule110_exact_on_every_ring_up_to_12_cells():
    """Every ring of 1 to 12 cells (8,190 rings), 40 generations, against direct simulation."""
    lines = [format(v, f"0{n}b") + " 40" for n in range(1, 13) for v in range(2 ** n)]
    _check("rule110", lines)


def test_multiplication_exact_on_grids_past_its_training_range():
    """Trained on operands of at most 6 digits; checked against Python's integers up to its
    verified size (at most 16 digits here), unequal lengths, and the families whose carries run
    longest."""
    n = min(load_step_model(default_model_path("multiplication")).metadata.verified_size or 16, 16)
    assert n > 6
    rng = np.random.default_rng(14)
    lines = [f"{random_digits(rng, int(a))}*{random_digits(rng, int(b))}"
             for a, b in zip(rng.integers(1, n + 1, 120), rng.integers(1, n + 1, 120))]
    lines += [f"{'9' * k}*{'9' * k}" for k in range(1, n + 1)] + [f"1{'0' * k}*{'9' * n}" for k in range(0, n, 3)]
    lines += ["0*0", "0*123456", "000*7", "1*1", "5*5", "99999999*1"]
    results = _check("multiplication", lines)
    assert max(r.steps for r in results) <= 2 * n + 1  # within the carry-save array's n_a + n_b, and one to settle
