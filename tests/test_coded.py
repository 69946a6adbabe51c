"""Coded rules (train/codes.py, train/coded.py): the code's automaton is exact on its own, and each
move of its training keeps the rule the same function."""
import dataclasses

import numpy as np
import pytest
import torch

from sead.runtime.tasks import get_task
from sead.train.coded import factor, fit_readout, fold_relu, transition_loss
from sead.train.codes import code_batch, get_code
from sead.train.data import encode_batch
from sead.train.loop import build_model
from sead.train.recipes import recipe

CODE = get_code("carry_thermometer")
TASK = get_task("multiplication")


def _batch(lines):
    parsed = [TASK.parse(line) for line in lines]
    x, y, _ = encode_batch("multiplication", parsed)
    return parsed, x, y


def test_the_code_automaton_settles_from_any_state_on_the_exact_product():
    """Iterated from random ±1 states, the automaton reaches the code of the carry-save array's fixed
    point, whose digits along the L edge are the product (Python's integers, not the array)."""
    rng = np.random.default_rng(0)
    digits = lambda n: "".join(map(str, rng.integers(0, 10, n)))
    lines = [f"{digits(n)}*{digits(m)}" for n, m in [(1, 1), (3, 7), (9, 2), (12, 12), (20, 5)]]
    lines += ["9" * 15 + "*" + "9" * 11, "0*123", "1000*999"]
    parsed, x, y = _batch(lines)
    gen = torch.Generator().manual_seed(0)
    state = (torch.randint(0, 2, (len(lines), CODE.channels, *x.shape[2:]), generator=gen).float() * 2 - 1) * x[:, :1]
    depth = 2 * max(len(p.a) + len(p.b) for p in parsed) + 4
    for _ in range(depth):
        state = CODE.transition(x, state)
    assert torch.equal(CODE.transition(x, state), state)  # a fixed point
    assert torch.equal(state, code_batch("carry_thermometer", parsed, tuple(x.shape[2:])))
    s = (state[:, :9] > 0).sum(1).numpy()
    for i, p in enumerate(parsed):
        na, nb = len(p.a), len(p.b)
        digits = np.concatenate([s[i, :na, 0], s[i, na, :nb]])[::-1]
        assert int("".join(map(str, digits))) == int(p.a) * int(p.b)


def _linear_model(hidden: int, seed: int = 0):
    cfg = dataclasses.replace(recipe("multiplication"), hidden=hidden)
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.linear_hidden = True
    return model


def test_fold_relu_keeps_the_linear_rule_on_every_input():
    model = _linear_model(3)
    with torch.no_grad():
        for p in (model.rule_in.weight, model.rule_in.bias):
            p.normal_(0, 2.0)  # hidden values of both signs
    _, x, _ = _batch(["123*45", "9*9", "4567*8"])
    state = CODE.random_states(x, torch.Generator().manual_seed(1))
    state[:, :, :1] = 0  # a row of cells before their first step
    linear = model.preactivation(x, state)
    assert (model.rule_in(model.pad(torch.cat([x, state], 1))) < 0).any()
    fold_relu(model)
    assert not model.linear_hidden
    assert torch.allclose(model.preactivation(x, state), linear, atol=1e-3)


def test_factor_is_exact_for_a_rule_of_that_rank():
    wide, narrow = _linear_model(13), _linear_model(3, seed=1)
    with torch.no_grad():  # make the wide rule rank 3: only 3 of its hidden units reach the output
        wide.rule_out.weight[:, 3:] = 0
    _, x, _ = _batch(["12*345", "99*9"])
    state = CODE.random_states(x, torch.Generator().manual_seed(2))
    factor(wide, narrow)
    assert torch.allclose(narrow.preactivation(x, state), wide.preactivation(x, state), atol=1e-4)


def test_the_readout_fitted_by_least_squares_reads_every_fixed_point():
    model = _linear_model(3)
    residual = fit_readout(model, "carry_thermometer", "multiplication", np.random.default_rng(0), 256, 6)
    assert residual < 1e-3
    parsed, x, y = _batch(["987654*123456", "5*5", "100*77"])
    bits = code_batch("carry_thermometer", parsed, tuple(x.shape[2:]))
    read = y >= 0
    assert torch.equal(model.readout(x, bits).argmax(1)[read], y[read])


def _hand_rule():
    """A rule of 3 linear units that is the automaton (codes.py's sums: v, the own carry, the margin mark)."""
    model = _linear_model(3)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        w, c = model.rule_in.weight, TASK.input_channels
        own, up, up_right, left = (1, 1), (0, 1), (0, 2), (1, 0)
        s_bits, down_bits, right_bits = slice(c, c + 9), slice(c + 9, c + 11), slice(c + 11, c + 13)
        from sead.runtime.tasks.multiplication import PRODUCTS
        for k, p in enumerate(PRODUCTS):  # unit 0: v
            w[0, 1 + k][own] = p % 10
            w[0, 1 + k][up] = p // 10
        w[0, s_bits][(slice(None), *up_right)] = 0.5
        w[0, 0][up_right] = 4.5
        w[0, down_bits][(slice(None), *up)] = 0.5
        w[0, 0][up] = 1.0
        w[0, right_bits][(slice(None), *left)] = 0.5
        w[0, 0][left] = 1.0
        w[1, down_bits][(slice(None), *own)] = 0.5  # unit 1: the own carry
        w[1, right_bits][(slice(None), *own)] = 0.5
        w[1, 0][own] = 2.0
        w[2, c - 1][own] = 30.0  # unit 2: the margin mark
        out, bias = model.rule_out.weight[:, :, 0, 0], model.rule_out.bias
        for m in range(1, 10):
            out[m - 1] = torch.tensor([2.0, -20.0, 0.0])
            bias[m - 1] = 2 * (0.5 - m)
        for k in (1, 2):
            out[8 + k] = torch.tensor([2.0, 0.0, -2.0])
            bias[8 + k] = 2 * (0.5 - 10 * k)
            out[10 + k] = torch.tensor([2.0, 0.0, 2.0])
            bias[10 + k] = 2 * (0.5 - 30 - 10 * k)
    return model


def test_the_transition_loss_is_zero_for_a_rule_that_is_the_automaton():
    """A hand-made rule of 3 linear units that is the automaton (codes.py's sums) has no wrong bit."""
    model = _hand_rule()
    _, x, _ = _batch([f"{a}*{b}" for a, b in [(123, 456), (99999, 9999), (7, 8), (31415, 92653)]])
    _, wrong = transition_loss(model, CODE, x, torch.Generator().manual_seed(3))
    assert wrong == 0.0
    with torch.no_grad():
        model.rule_out.bias[10] += 3.0  # k >= 2 moves to 18.5: some bits go wrong
    _, wrong = transition_loss(model, CODE, x, torch.Generator().manual_seed(3))
    assert wrong > 0.0


def test_the_bound_proves_the_hand_rule_and_not_a_rule_with_a_wrong_threshold():
    """bench/compact_bound.py: every output's worst margin over all neighbourhoods is 1 for the
    hand-made rule (it reads nothing else), and below 0 for one whose k >= 2 threshold moved."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("compact_bound", Path(__file__).parents[1] / "bench" / "compact_bound.py")
    bound = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bound)
    model = _hand_rule()
    worst, unproven = bound.worst_margins(model)
    assert worst == [1.0] * 13 and unproven == [0] * 13
    with torch.no_grad():
        model.rule_out.bias[10] += 3.0
    worst, unproven = bound.worst_margins(model)
    assert worst[10] < 0 and unproven[10] > 0 and worst[:10] == [1.0] * 10


# -- addition's carry code (train/codes.py carry_in) ----------------------------------------------------
def _addition_bound():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("addition_bound", Path(__file__).parents[1] / "bench" / "addition_bound.py")
    bound = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bound)
    return bound


@pytest.mark.parametrize("start", ["zero", "random"])
def test_the_carry_code_settles_on_the_exact_sum(start):
    """Iterated from the zero state or random ±1 bits, carry_in's automaton reaches the code of the
    carries, whose linear readout ((s mod 10) + c - 10 z) gives the sum's digits (Python's integers)."""
    code, task = get_code("carry_in"), get_task("addition")
    rng = np.random.default_rng(1)
    digits = lambda n: "".join(map(str, rng.integers(0, 10, n)))
    lines = [f"{digits(n)}+{digits(m)}" for n, m in [(1, 1), (5, 3), (16, 16), (30, 7), (1, 40)]]
    lines += ["9" * 25 + "+1", "1+" + "9" * 25, "0+0", "5+5", "45+55", "99+1"]
    parsed = [task.parse(line) for line in lines]
    x, y, _ = encode_batch("addition", parsed)
    gen = torch.Generator().manual_seed(0)
    state = torch.zeros(len(lines), code.channels, x.shape[2])
    if start == "random":
        state = (torch.randint(0, 2, state.shape, generator=gen).float() * 2 - 1) * x[:, :1]
    for _ in range(x.shape[2] + 1):
        state = code.transition(x, state)
    assert torch.equal(code.transition(x, state), state)  # a fixed point
    assert torch.equal(state, code_batch("carry_in", parsed, (x.shape[2],)))
    s = (x[:, 1:] * torch.arange(19.0)[None, :, None]).sum(1).long()
    read = s % 10 + (state[:, 0] > 0).long() - 10 * (state[:, 1] > 0).long()
    for i, p in enumerate(parsed):
        assert int("".join(map(str, read[i, : p.length].tolist()))) == int(p.a) + int(p.b), lines[i]


def test_the_shipped_addition_rule_is_its_codes_automaton_on_every_neighbourhood():
    """bench/addition_bound.py proves the shipped rule exact at every length: on every neighbourhood
    a cell meets, each bit's margin is far above rounding and no float32 decision differs."""
    from sead.runtime.model_file import default_model_path

    report = _addition_bound().check(default_model_path("addition"), never_met=False)
    assert report["exact_at_every_length"], report
    assert min(report["met"]["worst_margin"].values()) > 0.5


def test_the_addition_bound_catches_a_rule_with_a_moved_threshold(tmp_path):
    """The same check fails a rule whose carry threshold moved (a doctored copy of the shipped one)."""
    report = _addition_bound().check(_moved_bias("addition", 0, -3.0, tmp_path / "moved.onnx"), never_met=False)
    assert not report["exact_at_every_length"] and report["met"]["worst_margin"]["carry"] < 0


# -- parity's front code (train/codes.py parity_front) ---------------------------------------------------
def _bound(task: str):
    """bench/TASK_bound.py as a module (it imports bench/addition_bound.py's checks)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).parents[1] / "bench"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location(f"{task}_bound", bench / f"{task}_bound.py")
        bound = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bound)
    finally:
        sys.path.remove(str(bench))
    return bound


def _moved_bias(task: str, channel: int, delta: float, path):
    """A copy of the shipped TASK rule whose output bias of one state bit moved by delta."""
    import onnx
    from onnx import numpy_helper

    from sead.runtime.model_file import default_model_path

    proto = onnx.load(str(default_model_path(task)))
    second = [n for n in proto.graph.node if n.op_type == "Conv"][1].input[2]  # the rule's output bias
    for init in proto.graph.initializer:
        if init.name == second:
            bias = numpy_helper.to_array(init).copy()
            bias[channel] += delta
            init.CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("start", ["zero", "random"])
def test_the_parity_front_settles_on_every_prefixs_parity(start):
    """Iterated from the zero state or random ±1 bits, parity_front's automaton reaches every cell
    known with the parity of its prefix (a count of ones), each cell changing at most twice from zero."""
    code, task = get_code("parity_front"), get_task("parity")
    rng = np.random.default_rng(2)
    lines = ["".join(map(str, rng.integers(0, 2, n))) for n in (1, 2, 7, 30, 64)] + ["0" * 20, "1" * 21, "1" + "0" * 30]
    parsed = [task.parse(line) for line in lines]
    x, _, _ = encode_batch("parity", parsed)
    state = torch.zeros(len(lines), code.channels, x.shape[2])
    if start == "random":
        state = (torch.randint(0, 2, state.shape, generator=torch.Generator().manual_seed(0)).float() * 2 - 1) * x[:, :1]
    changes = torch.zeros(len(lines), x.shape[2])
    for _ in range(x.shape[2] + 1):
        new = code.transition(x, state)
        changes += (new != state).any(1).float()
        state = new
    assert torch.equal(code.transition(x, state), state)
    assert torch.equal(state, code_batch("parity_front", parsed, (x.shape[2],)))
    for i, line in enumerate(lines):
        odd = (state[i, 1, : len(line)] > 0).long().tolist()
        assert odd == [line[: j + 1].count("1") % 2 for j in range(len(line))], line
    if start == "zero":
        assert changes.max() <= 2


def test_the_shipped_parity_rule_is_its_codes_automaton_on_every_neighbourhood(tmp_path):
    """bench/parity_bound.py proves the shipped parity rule exact at every length, and fails a copy
    whose output bias moved."""
    from sead.runtime.model_file import default_model_path

    bound = _bound("parity")
    report = bound.check(default_model_path("parity"), never_met=False)
    assert report["exact_at_every_length"], report
    assert not bound.check(_moved_bias("parity", 1, 3.0, tmp_path / "moved.onnx"), never_met=False)["exact_at_every_length"]


# -- rule110's set-value code (train/codes.py set_value) -------------------------------------------------
def test_the_set_value_automaton_is_rule_110():
    """From the zero state, set_value's automaton holds after t steps each cell's value after t
    generations of direct simulation (the task's oracle), on rings of 1 to 40 cells; its readout's
    linear form (a bit while unset, v after) reads it."""
    code, task = get_code("set_value"), get_task("rule110")
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 5, 16, 40):
        line = "".join(map(str, rng.integers(0, 2, n)))
        x, _, _ = encode_batch("rule110", [task.parse(line)])
        state = torch.zeros(1, code.channels, n)
        for t in range(25):
            want = task.answer(task.parse(f"{line} {t}"))
            value = torch.where(state[0, 0] > 0, state[0, 1] > 0, x[0, 2] > 0).long()
            assert "".join(map(str, value.tolist())) == want, (line, t)
            assert torch.equal(state, code_batch("set_value", [task.parse(f"{line} {t}")], (n,)))
            state = code.transition(x, state)


def test_the_shipped_rule110_rule_is_its_codes_automaton_on_every_neighbourhood(tmp_path):
    """bench/rule110_bound.py proves the shipped rule110 rule exact on every ring for any number of
    generations, and fails a copy whose output bias moved."""
    from sead.runtime.model_file import default_model_path

    bound = _bound("rule110")
    report = bound.check(default_model_path("rule110"), never_met=False)
    assert report["exact_at_every_length"] and report["met"]["neighbourhoods"] == 72, report
    assert not bound.check(_moved_bias("rule110", 1, 3.0, tmp_path / "moved.onnx"), never_met=False)["exact_at_every_length"]
