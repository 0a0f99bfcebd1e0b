"""The audit trail ([Daemon] audit_log) read back by the tests, every line checked against the schema the
package ships (``rpcdaemon/audit_schema.json``, JSON Schema 2020-12)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema

from rpcdaemon.telemetry.audit import SCHEMA_FILE

VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))


def schema_problems(doc: Mapping[str, Any]) -> list[str]:
    """What is wrong with one audit line by the schema (nothing: an empty list)."""
    return [error.message for error in sorted(VALIDATOR.iter_errors(doc), key=str)]


def check_audit_line(doc: Mapping[str, Any]) -> None:
    """Fail naming the line and what is wrong with it, unless it matches the schema."""
    problems = schema_problems(doc)
    assert not problems, f"{json.dumps(doc)}: {problems}"


def read_audit(path: Path, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """Every line of an audit file (ASCII, one JSON object a line), each checked against the schema.
    ``missing_ok``: a file not written yet reads as no lines."""
    if missing_ok and not path.exists():
        return []
    docs = []
    for text in path.read_text(encoding="ascii").splitlines():
        doc = json.loads(text)
        check_audit_line(doc)
        docs.append(doc)
    return docs
