"""Load the YAML config into a Config, reporting every problem as "FILE:LINE: field.path: message".

The YAML is composed into nodes first (they carry line numbers), then constructed into plain
data and validated by pydantic. Each pydantic error's loc is walked down the node tree to the
line of the offending key; when the key is absent (a missing field, a union branch name) the
closest parent's line is used.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from edge.config.errors import ConfigError
from edge.config.paths import CONFIG_DIR_KEY
from edge.config.root import Config

# EX_CONFIG from sysexits.h: "something was found in an unconfigured or misconfigured state".
# systemd units can use RestartPreventExitStatus=78 so a bad config is not restarted in a loop.
EXIT_CONFIG = 78

# A config is a few kilobytes; these bounds keep a broken or hostile file from eating the
# device's memory or stack (YAML nesting recursion, alias "billion laughs").
MAX_CONFIG_BYTES = 1024 * 1024
MAX_NESTING = 64
MAX_EXPANDED_NODES = 100_000

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Error types whose input is worth echoing: numbers, booleans and enum choices are never
# secrets, whereas a string could be a password typed into the wrong key or a camera URL.
_ECHO_STR_INPUT_TYPES = {"literal_error", "enum"}
# How pydantic names a union branch in an error's loc ("function-after[_check(), str]"); such
# parts are no YAML key, so they are left out of the printed field path.
_UNION_TAG = re.compile(r"^[a-z][a-z-]*\[.*\]$")


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose value errors (e.g. "!!int abc") become YAML errors with a line."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """Construct as SafeLoader does, turning Python errors into marked ConstructorErrors."""
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            raise ConstructorError(
                None, None, f"cannot read this value: {exc}", node.start_mark
            ) from exc


def load_config(path: Path | str) -> Config:
    """Read, parse and validate the config file at path.

    Relative paths inside the file are taken relative to the file's folder.
    Raises ConfigError with one message per problem, each naming the file and line.
    """
    path = Path(path)
    name = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{name}: config file is {size} bytes, more than the {MAX_CONFIG_BYTES} allowed"
            )
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{name}: cannot read config file: {reason}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{name}:{line}: config file is not UTF-8 text: {exc.reason}") from exc
    return parse_config(text, name, config_dir=path.absolute().parent)


def load_config_or_defaults(path: Path | None) -> Config:
    """The config file at path, or the built-in defaults when path is None (replays, evals)."""
    return load_config(path) if path is not None else parse_config("", "<defaults>", Path.cwd())


def parse_config(text: str, filename: str = "<config>", config_dir: Path | None = None) -> Config:
    """Parse and validate config text; filename only labels the messages.

    config_dir anchors relative paths (None leaves them as written).
    Raises ConfigError as load_config does.
    """
    root, data = _compose_and_construct(text, filename)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        line = _line(root)
        raise ConfigError(
            f"{filename}:{line}: the top level must be a mapping of sections "
            f"(device:, cameras:, mqtt: ...), not {_yaml_type(data)}"
        )
    data = _null_sections_to_defaults(data, Config)
    context = {CONFIG_DIR_KEY: config_dir} if config_dir is not None else None
    try:
        return Config.model_validate(data, context=context)
    except ValidationError as exc:
        # In file order, so the messages read top to bottom like the file.
        located = [_format_error(err, root, filename) for err in exc.errors(include_url=False)]
        located.sort(key=lambda item: item[0])
        raise ConfigError([message for _, message in located]) from None


def config_schema() -> dict[str, Any]:
    """The JSON schema of Config, for editors (yaml-language-server) and documentation.

    Host-dependent defaults (device name, model path, time zone, state folder) are left out
    because they are computed where maskwatch runs.
    """
    schema = Config.model_json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def config_to_yaml(config: Config) -> str:
    """The effective configuration (defaults filled in) as YAML, e.g. for check-config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _compose_and_construct(text: str, filename: str) -> tuple[Node | None, Any]:
    """The YAML's node tree (for line numbers) and the plain data built from it."""
    try:
        _check_nesting(text, filename)
        loader = _LineLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None, None
            _check_nodes(root, filename)
            return root, loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "syntax error"
        raise ConfigError(f"{filename}:{line}: invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        raise ConfigError(
            f"{filename}:{line}: invalid YAML: character {_char_name(exc.character)} "
            "is not allowed in YAML"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{filename}:1: invalid YAML: {exc}") from None


def _check_nesting(text: str, filename: str) -> None:
    """Reject absurd nesting before PyYAML's recursive composer overflows the stack.

    The event parser is iterative, so counting depth on its events is safe for any input.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_NESTING:
                line = event.start_mark.line + 1 if event.start_mark is not None else 1
                raise ConfigError(
                    f"{filename}:{line}: invalid YAML: nested more than {MAX_NESTING} levels deep"
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check_nodes(root: Node, filename: str) -> None:
    """Reject duplicate keys, recursive aliases and alias bombs, each with its line.

    PyYAML silently keeps the last of two equal keys; in a config that hides a whole section
    (two mqtt: blocks), so it is an error here. Aliases are allowed (handy for cameras sharing
    settings) as long as the expanded document stays small and acyclic.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def visit(node: Node, depth: int) -> int:
        """Expanded node count below node; raises on cycles, bombs and duplicate keys."""
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise ConfigError(
                f"{filename}:{_line(node)}: invalid YAML: an alias refers to the value "
                "that contains it (recursive structure)"
            )
        if depth > MAX_NESTING:
            raise ConfigError(
                f"{filename}:{_line(node)}: invalid YAML: nested more than {MAX_NESTING} "
                "levels deep (after expanding aliases)"
            )
        on_path.add(key)
        total = 1
        if isinstance(node, MappingNode):
            seen: dict[tuple[str, str], Node] = {}
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.tag != _MERGE_TAG:
                    ident = (k.tag, k.value)
                    if ident in seen:
                        raise ConfigError(
                            f"{filename}:{_line(k)}: {k.value}: duplicate key "
                            f"(first defined at line {_line(seen[ident])})"
                        )
                    seen[ident] = k
                total += visit(k, depth + 1) + visit(v, depth + 1)
        elif isinstance(node, SequenceNode):
            for item in node.value:
                total += visit(item, depth + 1)
        on_path.discard(key)
        if total > MAX_EXPANDED_NODES:
            raise ConfigError(
                f"{filename}:{_line(node)}: invalid YAML: more than {MAX_EXPANDED_NODES} values "
                "after expanding aliases"
            )
        sizes[key] = total
        return total

    visit(root, 0)


def _char_name(character: int | str) -> str:
    """A character as U+XXXX, readable even when it is a control character."""
    code = ord(character) if isinstance(character, str) and len(character) == 1 else character
    return f"U+{code:04X}" if isinstance(code, int) else repr(character)


def _null_sections_to_defaults(data: dict[Any, Any], model: type[BaseModel]) -> dict[Any, Any]:
    """Drop sections written as "mqtt:" with nothing under them, so they get their defaults.

    An empty section is what a user leaves after commenting out all its keys; YAML reads it as
    null, which pydantic would reject as "not a dictionary". Only fields holding a section
    (a model, or a list of them) are touched: for other fields null keeps its meaning.
    """
    out: dict[Any, Any] = {}
    for key, value in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            out[key] = value
            continue
        section = as_model(field.annotation) if _is_plain_model(field.annotation) else None
        item_model = _list_item_model(field.annotation)
        if section is not None and value is None:
            continue
        if section is not None and isinstance(value, dict):
            out[key] = _null_sections_to_defaults(value, section)
        elif item_model is not None and value is None:
            continue
        elif item_model is not None and isinstance(value, list):
            out[key] = [
                _null_sections_to_defaults(v, item_model) if isinstance(v, dict) else v
                for v in value
            ]
        else:
            out[key] = value
    return out


def _is_plain_model(annotation: Any) -> bool:
    """Whether annotation is a model itself, not "Model | None" (where null means something)."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    """M for a list[M] field of models, else None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list and len(args) == 1 and _is_plain_model(args[0]):
        return typing.cast("type[BaseModel]", args[0])
    return None


def _line(node: Node | None) -> int:
    """1-based line where node starts (1 for an empty document)."""
    return node.start_mark.line + 1 if node is not None else 1


def _yaml_type(value: object) -> str:
    """How a YAML user would call this value's type."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def _node_line(root: Node | None, loc: Iterable[int | str]) -> tuple[int, int]:
    """Line of the deepest node that loc reaches, and how many parts of loc were found.

    A key's line for mappings, an item's own line for lists. Later keys win, as in
    construction, so entries merged in with "<<" are overridden.
    """
    node = root
    line = _line(root)
    found = 0
    for part in loc:
        if isinstance(node, MappingNode):
            match = None
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.value == str(part):
                    match = (k, v)
            if match is None:
                break
            line, node = _line(match[0]), match[1]
        elif isinstance(node, SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = _line(node)
        else:
            break
        found += 1
    return line, found


def _format_error(err: Any, root: Node | None, filename: str) -> tuple[int, str]:
    """One pydantic error as its line and "FILE:LINE: dotted.path: message"."""
    loc = tuple(err.get("loc", ()))
    line, found = _node_line(root, loc)
    msg = str(err.get("msg", "invalid value"))
    kind = err.get("type", "")
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "assertion_error":
        msg = msg.removeprefix("Assertion failed, ")
    elif kind == "extra_forbidden":
        hint = _did_you_mean(loc)
        if hint:
            msg = f"{msg} (did you mean {hint!r}?)"
    value = err.get("input")
    if kind not in ("extra_forbidden", "inline_password") and (
        isinstance(value, (bool, int, float))
        or (isinstance(value, str) and kind in _ECHO_STR_INPUT_TYPES)
    ):
        shown = repr(value) if isinstance(value, str) else yaml.safe_dump(value).split("\n")[0]
        msg = f"{msg} (got {shown[:60]})"
    path = ".".join(str(p) for p in _visible_loc(loc, found))
    return line, (f"{filename}:{line}: {path}: {msg}" if path else f"{filename}:{line}: {msg}")


def _visible_loc(loc: tuple[int | str, ...], found: int) -> tuple[int | str, ...]:
    """loc without pydantic's union-branch names ("function-after[...]").

    Only parts beyond those found in the YAML can be branch names; keys the user wrote stay.
    """
    tail = tuple(p for p in loc[found:] if not (isinstance(p, str) and _UNION_TAG.match(p)))
    return loc[:found] + tail


def _did_you_mean(loc: tuple[int | str, ...]) -> str | None:
    """The known field closest to an unknown key, for typos like "score_treshold"."""
    if not loc or not isinstance(loc[-1], str):
        return None
    model = _model_at(loc[:-1])
    if model is None:
        return None
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.7)
    return close[0] if close else None


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at loc, or None if loc leaves the models."""
    annotation: Any = Config
    for part in loc:
        model = as_model(annotation)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
            continue
        plain = strip_optional(annotation)
        args = typing.get_args(plain)
        if isinstance(part, int) and typing.get_origin(plain) is list and args:
            annotation = args[0]
            continue
        return None
    return as_model(annotation)


def strip_optional(annotation: Any) -> Any:
    """X for "X | None" / Optional[X]; annotation unchanged otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def as_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel subclass an annotation names (through Optional), else None."""
    annotation = strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
