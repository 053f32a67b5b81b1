"""Imports run one way: the toy world (espnet_ot.toy, an optional extra) may use the product, never the reverse, and
the tests of the product use what the benchmarks use (espnet_ot.utils.measure), never the benchmarks themselves."""

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from helpers import REPO

PACKAGE = REPO / "espnet_ot"
# The product: none of it may import espnet_ot.toy (espnet_ot/bin holds the toy's CLIs and may).
PRODUCT = ("__init__.py", "asr", "ot", "tasks", "bench", "utils")
RECIPE_LOCAL = REPO / "egs2" / "aishell_ot" / "asr1" / "local"


def _imports(path: Path, text: Optional[str] = None) -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) of every import in a Python file (or of `text` as if it were that file);
    relative imports are resolved from the file's package."""
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text, filename=str(path))
    package = None
    if PACKAGE in path.parents:
        package = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if path.name != "__init__.py":
            package = package.rsplit(".", 1)[0]
        else:
            package = package[: -len(".__init__")]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:  # `from espnet_ot import toy`
                yield node.lineno, f"{base}.{alias.name}"


def _importers_of(module: str, files: List[Path], texts: Optional[Dict[Path, str]] = None) -> List[str]:
    """`file:line imports name` for every import of module or a submodule of it."""
    texts = texts or {}
    return [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in files
        for line, name in _imports(path, texts.get(path))
        if name == module or name.startswith(module + ".")
    ]


def _product_files() -> List[Path]:
    files = []
    for part in PRODUCT:
        path = PACKAGE / part
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def test_the_product_never_imports_the_toy():
    assert len(_product_files()) > 20
    assert _importers_of("espnet_ot.toy", _product_files()) == []


def test_the_recipe_helpers_never_import_the_toy():
    files = sorted(RECIPE_LOCAL.glob("*.py"))
    assert files
    offenders = _importers_of("espnet_ot.toy", files)
    assert offenders == []


def test_only_the_benchmarks_own_tests_import_the_benchmarks():
    tests = REPO / "tests"
    files = [p for p in sorted(tests.rglob("*.py")) if (tests / "bench") not in p.parents]
    assert _importers_of("espnet_ot.bench", files) == []


def test_the_import_scan_sees_every_form_of_import():
    """The scan itself: absolute, from-, package-attribute and relative imports are all found."""
    probe = PACKAGE / "asr" / "probe.py"  # relative imports resolve from espnet_ot.asr
    lines = {
        "import espnet_ot.toy.world": True,
        "from espnet_ot.toy import kaldi_data": True,
        "from espnet_ot import toy": True,
        "from ..toy.study import Study": True,
        "from .. import toy": True,
        "from ..ot import sinkhorn": False,
        "import espnet_ot.tasks": False,
    }
    for line, toy in lines.items():
        assert bool(_importers_of("espnet_ot.toy", [probe], {probe: line})) == toy, line
