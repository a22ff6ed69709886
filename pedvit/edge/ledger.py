"""Audit ledger: one JSON line per request, appended; and the checker behind `pedvit ledger check`."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator


class Ledger:
    """Append-only JSON-lines file. Each line is one request's record (see `RunRecord.to_dict`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":"))
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def read_ledger(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON line ({error})") from error


def check_record(record: dict[str, Any]) -> list[str]:
    """Violations of the privacy constraints in one request record (empty when it is clean)."""
    problems: list[str] = []
    rid = record.get("request_id", "?")
    content = set(record["content_windows"])
    keep_local = set(record.get("keep_local", []))
    max_share = record["max_windows_per_worker"]
    held: dict[str, set[int]] = {name: set(w["windows"]) for name, w in record["workers"].items()}
    for name, windows in held.items():
        if len(windows) > max_share:
            problems.append(f"request {rid}: worker {name} received {len(windows)} windows, above the maximum {max_share}")
        if len(content) >= 2 and content <= windows:
            problems.append(f"request {rid}: worker {name} received every content window (the whole image)")
        leaked = windows & keep_local
        if leaked:
            problems.append(f"request {rid}: worker {name} received keep-local windows {sorted(leaked)}")
        padding = windows - content
        if padding:
            problems.append(f"request {rid}: worker {name} received pure-padding windows {sorted(padding)}")
        if record.get("adjacency") == "require":
            adjacent = record.get("adjacent_pairs", {}).get(name, [])
            if adjacent:
                problems.append(f"request {rid}: worker {name} holds adjacent windows {adjacent} although adjacency is required")
        if any(record.get("positions_hidden", {}).values()):
            # With hidden positions the edge's map (the order it sent the windows in) is the only way back from
            # a worker's answer to the image: it must cover exactly what the worker received.
            mapped = {w for call in record["workers"][name].get("sent_order", []) for w in call}
            if mapped != windows:
                problems.append(f"request {rid}: worker {name}'s window map covers {sorted(mapped)}, "
                                f"not the windows it received {sorted(windows)}")
    return problems


def check_ledger(path: str | os.PathLike[str]) -> tuple[int, list[str]]:
    """(number of requests checked, violations)."""
    count, problems = 0, []
    for record in read_ledger(path):
        count += 1
        problems.extend(check_record(record))
    return count, problems
