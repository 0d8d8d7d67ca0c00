"""The files momentax adds to each step: the record and the checksums.

``<step>/record/momentax.json`` (written by process 0) describes the tree
(see :mod:`momentax.training._checkpoint_tree`) and how many processes saved
it; ``<step>/checksums/process_<i>.json`` holds process ``i``'s part of each
leaf's checksum (see :mod:`momentax.training._checksum`), as hex strings.
"""

import json
import os
from typing import Any

from momentax.training import _checksum as checksum

FORMAT, VERSION = "momentax checkpoint", 2
RECORD_FILE = "momentax.json"  # Also the record of version 1, at the top.
RECORD, CHECKSUMS = "record", "checksums"  # Their Orbax items (folders).


def damaged(where: str, problem: str) -> ValueError:
    """The error for a checkpoint that is damaged or was never completed."""
    return ValueError(
        f"{where} is damaged or incomplete: {problem}. Nothing was restored; "
        "restore an earlier step."
    )


def read_json(file: str, where: str) -> Any:
    name = os.path.join(*file.split(os.sep)[-2:])
    try:
        with open(file) as f:
            return json.load(f)
    except FileNotFoundError:
        raise damaged(where, f"{name} is missing") from None
    except (OSError, ValueError) as error:
        raise damaged(where, f"{name} cannot be read ({error})") from None


def read_record(folder: str, where: str) -> dict[str, Any]:
    record = read_json(os.path.join(folder, RECORD, RECORD_FILE), where)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise damaged(where, f"{RECORD_FILE} is not a momentax checkpoint record")
    if record.get("version") != VERSION:
        raise ValueError(
            f"{where} has record version {record.get('version')}; this momentax "
            f"reads version {VERSION}."
        )
    fields = ("nodes", "leaves", "packed")
    if not all(isinstance(record.get(field), dict) for field in fields) or not (
        isinstance(record.get("process_count"), int)
    ):
        raise damaged(where, f"{RECORD_FILE} has missing or malformed fields")
    return record


def read_checksums(folder: str, record: dict[str, Any], where: str) -> dict[str, int]:
    """The checksum of every leaf with elements: the sum of every process's part."""
    parts = []
    for process in range(record["process_count"]):
        file = os.path.join(folder, CHECKSUMS, f"process_{process}.json")
        part = read_json(file, where)
        try:
            parts.append({name: int(value, 16) for name, value in part.items()})
        except (AttributeError, TypeError, ValueError):
            raise damaged(where, f"process_{process}.json is malformed") from None
    names = [name for name, leaf in record["leaves"].items() if 0 not in leaf["shape"]]
    if any(sorted(part) != sorted(names) for part in parts):
        raise damaged(where, "the checksums do not name the recorded leaves")
    sums = checksum.add_up([[part[name] for name in names] for part in parts])
    return dict(zip(names, sums, strict=True))
