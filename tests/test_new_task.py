"""A new task is one file plus its registry line: this test writes a toy task (invert a bit
string) as a module of its own, registers it, and takes it through training, export with
verification, the runtime's self-test, tiled solving and evaluation, with no other change."""
import importlib.util
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

TOY = '''
"""invert: each bit of a 0/1 string flipped."""
from sead.runtime.tasks.base import BITS, Parsed, Task, check_symbols, digit_rows, digits, not_blank, random_bits, symbol_texts


class Invert(Task):
    name = "invert"
    input_channels = 3  # mask, one-hot bit
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

    def targets(self, p):
        return 1 - digits(p.text)

    def random_line(self, rng, size, generations=None):
        return random_bits(rng, size)

    def canonical_lines(self):
        return ["0", "1", "0110", "111000"]
'''


@pytest.fixture()
def invert(tmp_path):
    from sead.runtime.tasks import TASKS, register

    path = tmp_path / "invert_task.py"
    path.write_text(textwrap.dedent(TOY))
    spec = importlib.util.spec_from_file_location("invert_task", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    task = register(module.Invert())  # the registry line
    yield task
    del TASKS["invert"]


def test_a_toy_task_goes_through_the_whole_pipeline(invert, tmp_path):
    from sead import Runtime
    from sead.export.exporter import export_checkpoint
    from sead.train.checkpoint import save_checkpoint
    from sead.train.evaluate import evaluate
    from sead.train.loop import train
    from sead.train.recipes import recipe

    model, record = train(recipe("invert", steps=150), log=False)  # no recipe of its own: the defaults
    save_checkpoint(tmp_path / "invert.pt", model, record)
    onnx_path, report = export_checkpoint(tmp_path / "invert.pt")  # verified against PyTorch
    assert report and onnx_path.is_file()
    rng = np.random.default_rng(0)
    lines = [invert.random_line(rng, n) for n in (1, 7, 16, 300, 5000)]  # 5,000 bits run in tiles
    with Runtime(str(onnx_path), "ort") as rt:  # loading runs the task's own self-test
        results = rt.solve(lines)
    assert [r.answer for r in results] == [invert.answer(invert.parse(line)) for line in lines]
    rows = evaluate(model, (16, 100), max_problems=8)
    assert [(r.family, r.exact) for r in rows] == [("random", 8), ("random", 8)]
