"""The generated documentation: docs/configuration.md and docs/config-schema.json.

Both are produced from the config models (`make docs`); these tests fail as soon as the committed
files differ from what the code generates, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from edge.config.load import config_schema, strip_optional
from edge.config.reference import config_reference
from edge.config.root import Config

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "configuration.md"
SCHEMA = REPO / "docs" / "config-schema.json"
OUT_OF_DATE = "{} is out of date: run `make docs` and commit the result"
# A table cell separator: a "|" not escaped as "\|".
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    """stdout of `python -m edge ARGS` (what `make docs` runs); fails the test on an error."""
    done = subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_configuration_reference_is_up_to_date() -> None:
    assert REFERENCE.is_file(), OUT_OF_DATE.format("docs/configuration.md (missing)")
    committed = REFERENCE.read_text(encoding="utf-8")
    assert committed == config_reference(), OUT_OF_DATE.format("docs/configuration.md")
    assert cli("config-reference") == committed, OUT_OF_DATE.format("docs/configuration.md")


def test_config_schema_file_is_up_to_date() -> None:
    assert SCHEMA.is_file(), OUT_OF_DATE.format("docs/config-schema.json (missing)")
    committed = SCHEMA.read_text(encoding="utf-8")
    assert json.loads(committed) == config_schema(), OUT_OF_DATE.format("docs/config-schema.json")
    assert cli("config-schema") == committed, OUT_OF_DATE.format("docs/config-schema.json")


def test_generated_docs_do_not_depend_on_the_host() -> None:
    """Defaults computed where maskwatch runs (zone, state folder, log format) stay out."""
    env = {"TZ": "Asia/Kathmandu", "STATE_DIRECTORY": "/srv/elsewhere", "JOURNAL_STREAM": "8:1"}
    assert cli("config-reference", env=env) == config_reference()
    assert json.loads(cli("config-schema", env=env)) == config_schema()


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (directly, optionally or as list items) and whether in a list."""
    inner = strip_optional(annotation)
    in_list = typing.get_origin(inner) is list
    if in_list:
        inner = typing.get_args(inner)[0]
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner, in_list
    return None, in_list


def _key_paths(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(key path, description) of every field below model, "[]" marking list items."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        yield key, field.description or ""
        nested, in_list = _model_in(field.annotation)
        if nested is not None:
            yield from _key_paths(nested, f"{key}[]." if in_list else f"{key}.")


def _table_rows(markdown: str) -> dict[str, list[str]]:
    """The reference's table rows by key path: the cells of each "| `key` | ... |" line."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in CELL_SEPARATOR.split(line)[1:-1]]
            rows[cells[0].strip("`")] = cells
    return rows


def test_reference_documents_every_field_once_with_its_description() -> None:
    """Each top-level section gets a heading with its description, every other field a row."""
    reference = config_reference()
    sections = {n for n, f in Config.model_fields.items() if _model_in(f.annotation)[0]}
    rows = _table_rows(reference)
    expected = {key: text for key, text in _key_paths(Config) if key not in sections}
    assert set(rows) == set(expected)
    assert sum(line.startswith("| `") for line in reference.splitlines()) == len(expected)
    for key, description in expected.items():
        cells = rows[key]
        assert len(cells) == 5, (key, cells)  # key, type, default, description, constraints
        assert _unescape(cells[3]) == description, key
    for name in sections:
        intro = reference.split(f"\n## `{name}`\n\n", 1)[1].split("\n", 1)[0]
        assert _unescape(intro).startswith(Config.model_fields[name].description or "?"), name


def _unescape(markdown: str) -> str:
    """Reference prose back to the description it was made from."""
    return (
        markdown.replace("&lt;", "<").replace("&gt;", ">").replace("\\$", "$").replace("\\|", "|")
    )


@pytest.mark.parametrize(
    ("key", "type_", "default", "constraints"),
    [
        ("device", "string", "see description", "matches `^[a-z0-9_-]{1,64}$`"),
        ("cameras[].name", "string", "*required*", "matches `^[A-Za-z0-9_-]{1,64}$`"),
        ("cameras[].width", "integer or null", "`null`", "> 0"),
        ("cameras[].zone.margin_left_pct", "number", "`5.0`", "≥ 0; ≤ 49"),
        (
            "cameras[].zone.polygon",
            "list of [number, number] or null",
            "`null`",
            "at least 3 items; each value ≥ 0, ≤ 1",
        ),
        ("cameras[].file_pacing", "one of `asap`, `realtime`", "`realtime`", ""),
        ("mqtt.tls", "mapping", "(the defaults below)", ""),
        ("mqtt.host", "string", "`localhost`", "not empty"),
        ("mqtt.qos", "integer", "`1`", "≥ 0; ≤ 2"),
        ("mqtt.retain_totals", "boolean", "`true`", ""),
        ("detector.model", "path", "see description", ""),
    ],
)
def test_reference_rows_state_type_default_and_limits(
    key: str, type_: str, default: str, constraints: str
) -> None:
    cells = _table_rows(config_reference())[key]
    assert cells[1:3] == [type_, default]
    assert cells[4] == constraints


def test_readme_links_the_reference() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    configuration = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/configuration.md)" in configuration
