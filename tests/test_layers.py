"""The layer rules of docs/layout.md, checked on the source: imports point downwards.

Every module's imports are read with :mod:`ast`, top-level and function-local alike
(``from tipline import store`` and ``import tipline.store.db`` count too), so a rule
cannot be dodged by moving an import into a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tipline"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_in(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module imported anywhere in ``source`` (the text of ``module``), as dotted
    names; for ``from a import b`` both ``a`` and ``a.b`` (``b`` may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _imported(path: Path) -> set[str]:
    return _imports_in(
        path.read_text(encoding="utf-8"), _module_name(path), is_package=path.name == "__init__.py"
    )


def _modules(*packages: str) -> list[Path]:
    out: list[Path] = []
    for name in packages:
        folder = PACKAGE / name
        out.extend(sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")])
    return [p for p in out if p.exists()]


def _offenders(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Module name -> the forbidden modules it imports."""
    out: dict[str, list[str]] = {}
    for path in paths:
        bad = sorted(
            name
            for name in _imported(path)
            if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        # "a" and "a.b" from "from a import b": name "a.b" only when "a" is not named
        shown = [n for n in bad if n.rpartition(".")[0] not in bad]
        if shown:
            out[_module_name(path)] = shown
    return out


def _report(offenders: dict[str, list[str]]) -> str:
    return "\n".join(f"  {module}: {', '.join(names)}" for module, names in offenders.items())


ADAPTERS = ("api", "cli", "web", "demo")
DOMAIN = ("signals", "index", "banks")


def test_adapters_do_not_import_the_store() -> None:
    """``cli``, ``api``, ``web`` and ``demo`` reach the database through services only."""
    paths = _modules(*ADAPTERS)
    assert paths, "no adapter modules found"
    offenders = _offenders(paths, ("tipline.store",))
    assert not offenders, "adapters importing tipline.store:\n" + _report(offenders)


def test_domain_imports_no_services_store_or_adapters() -> None:
    """``signals``, ``index`` and ``banks`` are pure: no services, store or adapters."""
    paths = _modules(*DOMAIN)
    assert paths, "no domain modules found"
    forbidden = tuple(f"tipline.{name}" for name in ("services", "store", *ADAPTERS))
    offenders = _offenders(paths, forbidden)
    assert not offenders, "domain modules importing upper layers:\n" + _report(offenders)


def test_services_and_store_import_no_adapters() -> None:
    """Nothing below the adapters imports them (shared helpers live below)."""
    paths = _modules("services", "store")
    offenders = _offenders(paths, tuple(f"tipline.{name}" for name in ADAPTERS))
    assert not offenders, "services/store importing adapters:\n" + _report(offenders)


def _entry_modules(package: str, marker: str) -> list[Path]:
    """The modules of ``package`` that define ``marker`` (e.g. ``def register(``)."""
    return [p for p in _modules(package) if marker in p.read_text(encoding="utf-8")]


def test_adapters_take_no_helpers_from_sibling_adapters() -> None:
    """Shared helpers live below the adapters: no adapter package imports another
    (``cli`` from ``api`` or the reverse), no route module imports another route
    module, no CLI command module imports another command module."""
    offenders: dict[str, list[str]] = {}
    for name in ADAPTERS:
        others = tuple(f"tipline.{o}" for o in ADAPTERS if o not in (name, "demo"))
        offenders.update(_offenders(_modules(name), others))
    for group in (
        [p for p in _modules("api") if p.name.startswith("routes_")],
        _entry_modules("cli", "\ndef register("),
    ):
        names = tuple(_module_name(p) for p in group)
        for path in group:
            own = _module_name(path)
            found = _offenders([path], tuple(n for n in names if n != own))
            offenders.update(found)
    assert not offenders, "adapters importing sibling adapters:\n" + _report(offenders)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import tipline.store.db\n", {"tipline.store.db"}),
        ("from tipline import store\n", {"tipline", "tipline.store"}),
        ("def f():\n    from tipline.store.db import transaction\n", {"tipline.store.db"}),
        ("from ..store import db\n", {"tipline.store", "tipline.store.db"}),
    ],
)
def test_the_walker_sees_every_form_of_import(source: str, expected: set[str]) -> None:
    """The check itself finds top-level, nested, package and relative imports."""
    assert expected <= _imports_in(source, "tipline.api.probe")
