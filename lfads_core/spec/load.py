"""Reading a spec file: YAML, ``--set`` overrides, defaults, relative paths, validation."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Iterable

import attrs
import yaml

from ..errors import SpecError
from .convert import structure, unstructure
from .schema import DEFAULT_COMPONENTS, DimensionSpec, Spec, default_search_space


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads booleans and floats as YAML 1.2 does: only true/false are booleans
    (``on``, ``off``, ``yes``, ``no`` stay strings: ``train.cuda_graphs: off``), and ``1e-3``
    (no dot) is a float. A key given twice in one mapping is an error (YAML forbids it; PyYAML
    would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *anchor": its keys may be overridden (flatten_mapping)
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # SafeLoader reports an unhashable key itself
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"""),
    list("-+0123456789"))


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def read_yaml(path: str | os.PathLike) -> dict:
    """The raw mapping of a YAML spec file, or a one-line SpecError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read spec file ({type(exc).__name__})") from None
    try:
        raw = _yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: YAML syntax error{where}: {problem}") from None
    if raw is None:
        raise SpecError(f"{path}: the spec file is empty (expected a YAML mapping with keys data, "
                        f"model, train, ...)")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a YAML mapping with keys data, model, train, ..., "
                        f"got {type(raw).__name__}")
    return raw


def parse_overrides(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``["train.lr=0.001"]`` -> ``[(["train", "lr"], 0.001)]``; values are parsed as YAML."""
    parsed = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item}: expected KEY=VALUE, e.g. train.lr=0.001")
        try:
            value = _yaml(text) if text.strip() else None
        except yaml.YAMLError:
            raise SpecError(f"--set {item}: value is not valid YAML") from None
        parsed.append((key.strip().split("."), value))
    return parsed


def apply_overrides(raw: dict, overrides: list[tuple[list[str], Any]]) -> dict:
    """A copy of ``raw`` with each ``(path, value)`` set; list items are addressed by index."""
    raw = copy.deepcopy(raw)
    for path, value in overrides:
        path = _search_space_path(raw, path)
        node: Any = raw
        for i, key in enumerate(path):
            last = i == len(path) - 1
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise SpecError(f"--set {'.'.join(path)}: {where}: no list item {key} "
                                    f"(the list has {len(node)})")
                key = int(key)
            elif not isinstance(node, dict):
                raise SpecError(f"--set {'.'.join(path)}: {'.'.join(path[:i])} is not a mapping")
            if last:
                node[key] = value
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    if path[i + 1].lstrip("-").isdigit():
                        raise SpecError(f"--set {'.'.join(path)}: {where} has no list item {path[i + 1]}")
                    node[key] = {}
                node = node[key]
    return raw


def _search_space_path(raw: dict, path: list[str]) -> list[str]:
    """The keys of ``pbt.search_space`` are dotted spec paths themselves:
    ``pbt.search_space.train.lr.low`` sets field ``low`` of the entry ``train.lr``, and
    ``pbt.search_space.train.lr`` the whole entry. A spec without a search space gets the
    default one first, so that a --set changes or extends it."""
    if path[:2] != ["pbt", "search_space"] or len(path) < 3:
        return path
    if raw.get("pbt") is None:
        raw["pbt"] = {}
    pbt = raw["pbt"]
    if isinstance(pbt, dict) and pbt.get("search_space") is None:
        pbt["search_space"] = {k: attrs.asdict(v) for k, v in default_search_space().items()}
    space = pbt.get("search_space") if isinstance(pbt, dict) else None
    rest, fields = path[2:], {f.name for f in attrs.fields(DimensionSpec)}
    # a field of an entry (low, ...; or a misspelt field of an entry the space has)
    field = len(rest) > 1 and (rest[-1] in fields
                               or (isinstance(space, dict) and ".".join(rest[:-1]) in space))
    key = rest[:-1] if field else rest
    return path[:2] + [".".join(key)] + rest[len(key):]


def _with_defaults(raw: dict) -> dict:
    model = raw.get("model")
    if isinstance(model, dict):
        for key, name in DEFAULT_COMPONENTS.items():
            model.setdefault(key, {"name": name})
            if isinstance(model[key], dict):  # e.g. only a --set of one parameter
                model[key].setdefault("name", name)
    return raw


def _resolve_paths(raw: dict, base: Path) -> dict:
    raw.setdefault("output", "runs/lfads")
    data = raw.get("data")
    resolve = lambda p: str((base / os.path.expanduser(p)).resolve())  # noqa: E731 - globs too
    if isinstance(data, dict) and isinstance(data.get("path"), str) and data["path"]:
        data["path"] = resolve(data["path"])
    elif isinstance(data, dict) and isinstance(data.get("path"), list):
        data["path"] = [resolve(p) if isinstance(p, str) and p else p for p in data["path"]]
    if isinstance(raw.get("output"), str):
        raw["output"] = str((base / os.path.expanduser(raw["output"])).resolve())
    return raw


def load_spec(path: str | os.PathLike, overrides: Iterable[str] = (), out: str | None = None) -> Spec:
    """Read, override, default, resolve and validate a spec file.

    Relative ``data.path`` and ``output`` resolve against the spec file's folder; ``out``
    (from ``--out``) replaces ``output`` and resolves against the working directory.
    """
    path = Path(path)
    raw = apply_overrides(read_yaml(path), parse_overrides(overrides))
    raw = _resolve_paths(_with_defaults(raw), path.resolve().parent)
    if out is not None:
        raw["output"] = str(Path(out).expanduser().resolve())
    return structure(raw, Spec, source=str(path))


def spec_from_dict(raw: dict, source: str = "spec") -> Spec:
    """Validate an already-resolved mapping (for example a saved run spec)."""
    return structure(_with_defaults(copy.deepcopy(raw)), Spec, source=source)


def spec_to_dict(spec: Spec) -> dict:
    return unstructure(spec)


def dump_spec(spec: Spec) -> str:
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False)
