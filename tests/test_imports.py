"""Imports point one way: cli -> {serve, export, train, runtime}; export -> train -> runtime.

Read from the source with the ast module, imports inside functions included, so a lazy import
that breaks the direction is caught as surely as one at the top of a file.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the `sead` package (pyproject: package-dir sead = ".")
PACKAGES = ("runtime", "train", "export", "cli", "serve")


def module_name(path: Path) -> str:
    parts = ["sead", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names), wherever the import statement stands;
    `from package import name` counts as importing package.name too."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            found.add(origin)
            found |= {f"{origin}.{alias.name}" for alias in node.names}
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sources(package):
        for name in imported_modules(path):
            if any(name == f"sead.{f}" or name.startswith(f"sead.{f}.") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_the_scan_sees_relative_and_function_level_imports(tmp_path, monkeypatch):
    folder = tmp_path / "runtime"
    folder.mkdir()
    (folder / "probe.py").write_text("from . import tasks\nfrom ..train import model\n"
                                     "def f():\n    import sead.cli.main\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imported_modules(folder / "probe.py") >= {"sead.runtime.tasks", "sead.train.model", "sead.cli.main"}
    assert sorted(offending("runtime", ("train", "cli"))) == ["runtime/probe.py imports sead.cli.main",
                                                              "runtime/probe.py imports sead.train",
                                                              "runtime/probe.py imports sead.train.model"]


@pytest.mark.parametrize("package, forbidden", [
    ("runtime", ("train", "export", "cli", "serve")),
    ("train", ("export", "cli", "serve")),
    ("export", ("cli", "serve")),
])
def test_imports_point_one_way(package, forbidden):
    assert offending(package, forbidden) == []


def test_no_import_cycle_among_the_cli_modules():
    cli = {module_name(p): p for p in sources("cli")}
    edges = {name: {m for m in imported_modules(path) if m in cli and m != name} for name, path in cli.items()}
    assert "sead.cli.run_cmd" in edges["sead.cli.main"]  # the scan sees the registrations

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(edges[start]):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            found = cycle_from(nxt, path + [nxt])
            if found:
                return found
        return None

    cycles = [c for name in cli if (c := cycle_from(name, [name]))]
    assert cycles == [], " -> ".join(cycles[0])


def test_importing_the_cli_imports_neither_torch_nor_onnxruntime():
    probe = ("import sys; import sead.cli.main; "
             "print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_package_folder_is_in_the_wheel():
    """pyproject lists packages by name: a new subpackage missing from the list would be left out
    of a built wheel while an editable install still imports it."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"sead"} | {".".join(["sead", *init.parent.relative_to(ROOT).parts])
                          for top in ("train", "export", "runtime", "cli", "serve")
                          for init in (ROOT / top).rglob("__init__.py")}
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
