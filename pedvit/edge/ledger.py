"""Audit ledger: one JSON line per request, hash-chained and optionally MACed; the checker behind
`pedvit ledger check`.

Each line carries ``chain = {"seq": n, "prev": sha256 of line n-1 as written, "mac": HMAC}``: editing,
deleting, inserting or reordering a record breaks the next record's ``prev`` (or its own ``seq``). Someone who
rewrites the whole chain from the edit onwards defeats the hash chain alone; the HMAC-SHA256 with a key only the
edge holds (``Ledger(key=...)``, or the environment variable ``PEDVIT_LEDGER_KEY``) defeats that too. Records
cut off the *end* leave a valid shorter chain: compare against a head you kept (`ledger_head`, ``--head``).

The checker judges each record against a :class:`LedgerPolicy` given by the auditor, not against limits
written in the record it checks.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .video_ledger import video_coverage_problems

#: the ``prev`` of the first record
GENESIS = "0" * 64
#: environment variable holding the edge's ledger key (any string; kept off the ledger's machine if possible)
KEY_ENV = "PEDVIT_LEDGER_KEY"


def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def line_hash(line: str) -> str:
    """sha256 (hex) of one ledger line as written, without its newline."""
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def _mac(key: bytes, record: dict[str, Any]) -> str:
    """HMAC-SHA256 of the canonical record with its ``chain.mac`` left out."""
    chain = {k: v for k, v in record.get("chain", {}).items() if k != "mac"}
    return hmac.new(key, _canonical({**record, "chain": chain}).encode("utf-8"), hashlib.sha256).hexdigest()


def ledger_key_from_env() -> bytes | None:
    value = os.environ.get(KEY_ENV)
    return value.encode("utf-8") if value else None


def _last_line(handle: Any) -> str | None:
    """The last non-empty line of a file opened for binary reading (reads backwards from the end)."""
    handle.seek(0, os.SEEK_END)
    pos = handle.tell()
    tail = b""
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        handle.seek(pos)
        tail = handle.read(step) + tail
        lines = [line for line in tail.split(b"\n") if line.strip()]
        if len(lines) >= 2 or (lines and pos == 0):  # the last line is whole once a line precedes it
            return lines[-1].decode("utf-8")
    return None


class Ledger:
    """Append-only, hash-chained JSON-lines file. Each line is one request's record (see `RunRecord.to_dict`)
    plus its ``chain``. Safe for several writers (threads, processes): each append locks the file and chains
    to the line it finds last."""

    def __init__(self, path: str | os.PathLike[str], *, key: bytes | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = key if key is not None else ledger_key_from_env()
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        with self._lock, open(self.path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                last = _last_line(handle)
                if last is None:
                    seq, prev = 0, GENESIS
                else:
                    seq = int(json.loads(last).get("chain", {}).get("seq", -1)) + 1
                    prev = line_hash(last)
                body = {**record, "chain": {"seq": seq, "prev": prev}}
                if self._key is not None:
                    body["chain"]["mac"] = _mac(self._key, body)
                handle.seek(0, os.SEEK_END)
                handle.write((_canonical(body) + "\n").encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield number, line, json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON line ({error})") from error


def read_ledger(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    for _, _, record in _lines(path):
        yield record


def ledger_head(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(number of records, hash of the last line): an anchor to keep elsewhere, to detect a cut-off end."""
    count, head = 0, GENESIS
    for _, line, _ in _lines(path):
        count, head = count + 1, line_hash(line)
    return count, head


@dataclass(frozen=True)
class LedgerPolicy:
    """What the auditor requires of every request.

    Attributes:
        max_windows_per_worker: most windows one worker may receive (None: the limit each record states,
            which is only as trustworthy as the chain that protects it).
        max_share: most of an image's content windows one worker may receive, as a fraction (None: no limit
            beyond never the whole image).
        keep_local_classes: sensitive classes whose detectors must have run (e.g. ``("faces", "text")``).
        max_scene_coverage: videos: most share of a video's scene one worker may have been sent, replayed over
            its frames (`pedvit.edge.video_ledger`; None: the cap each video's records state).
    """

    max_windows_per_worker: int | None = None
    max_share: float | None = None
    keep_local_classes: tuple[str, ...] = ()
    max_scene_coverage: float | None = None


def _check_worker(rid: Any, name: str, windows: set[int], record: dict[str, Any], limit: int,
                  policy: LedgerPolicy) -> list[str]:
    problems: list[str] = []
    content = set(record["content_windows"])
    if len(windows) > limit:
        problems.append(f"request {rid}: worker {name} received {len(windows)} windows, above the maximum {limit}")
    if policy.max_share is not None and content and len(windows) > math.floor(policy.max_share * len(content) + 1e-9):
        problems.append(f"request {rid}: worker {name} received {len(windows)} of {len(content)} content windows, "
                        f"above the maximum share {policy.max_share:g}")
    if len(content) >= 2 and content <= windows:
        problems.append(f"request {rid}: worker {name} received every content window (the whole image)")
    leaked = windows & set(record.get("keep_local", []))
    if leaked:
        problems.append(f"request {rid}: worker {name} received keep-local windows {sorted(leaked)}")
    padding = windows - content
    if padding:
        problems.append(f"request {rid}: worker {name} received pure-padding windows {sorted(padding)}")
    if record.get("adjacency") == "require" and record.get("adjacent_pairs", {}).get(name):
        problems.append(f"request {rid}: worker {name} holds adjacent windows {record['adjacent_pairs'][name]} "
                        "although adjacency is required")
    if any(record.get("positions_hidden", {}).values()):
        # With hidden positions the edge's map (the order it sent the windows in) is the only way back from
        # a worker's answer to the image: it must cover exactly what the worker received.
        mapped = {w for call in record["workers"][name].get("sent_order", []) for w in call}
        if mapped != windows:
            problems.append(f"request {rid}: worker {name}'s window map covers {sorted(mapped)}, "
                            f"not the windows it received {sorted(windows)}")
    return problems


def check_record(record: dict[str, Any], policy: LedgerPolicy = LedgerPolicy()) -> list[str]:
    """Violations of the privacy constraints in one request record (empty when it is clean)."""
    rid = record.get("request_id", "?")
    limit = policy.max_windows_per_worker
    if limit is None:
        limit = record["max_windows_per_worker"]
    problems: list[str] = []
    for name, worker in record["workers"].items():
        problems += _check_worker(rid, name, set(worker["windows"]), record, limit, policy)
    if policy.keep_local_classes:
        ran = set(record.get("extra", {}).get("sensitive", {}).get("keep_local_classes", []))
        missing = [c for c in policy.keep_local_classes if c not in ran]
        if missing:
            problems.append(f"request {rid}: keep-local detection for {', '.join(missing)} did not run "
                            f"(ran: {', '.join(sorted(ran)) or 'none'})")
    return problems


def _check_chain(number: int, line: str, record: dict[str, Any], expected: tuple[int, str],
                 key: bytes | None) -> list[str]:
    chain = record.get("chain")
    if not isinstance(chain, dict):
        return [f"line {number}: record has no chain (not written by a chained ledger, or stripped)"]
    problems = []
    seq, prev = expected
    if chain.get("seq") != seq:
        problems.append(f"line {number}: sequence number {chain.get('seq')}, expected {seq} "
                        "(records removed, inserted or reordered)")
    if chain.get("prev") != prev:
        problems.append(f"line {number}: hash chain broken: 'prev' does not match the line before "
                        "(a record was edited, removed, inserted or reordered)")
    if key is not None:
        if "mac" not in chain:
            problems.append(f"line {number}: no MAC although a ledger key was given")
        elif not hmac.compare_digest(str(chain["mac"]), _mac(key, record)):
            problems.append(f"line {number}: MAC does not verify (the record was edited, or written with another key)")
    return problems


def check_ledger(path: str | os.PathLike[str], policy: LedgerPolicy = LedgerPolicy(), *,
                 key: bytes | None = None, head: str | None = None) -> tuple[int, list[str]]:
    """(number of requests checked, violations): the hash chain (and MAC with ``key``), each record against
    ``policy``, each video's frames against the scene-coverage cap, and with ``head`` (a `ledger_head` hash kept
    elsewhere) that the ledger still reaches it."""
    count, problems = 0, []
    expected = (0, GENESIS)
    seen_head = head is None
    videos = []
    for number, line, record in _lines(path):
        problems += _check_chain(number, line, record, expected, key)
        problems += check_record(record, policy)
        if "video" in record.get("extra", {}):
            videos.append(record)
        count += 1
        chain = record.get("chain") if isinstance(record.get("chain"), dict) else {}
        seq = chain.get("seq")
        expected = ((seq if isinstance(seq, int) else count - 1) + 1, line_hash(line))
        seen_head = seen_head or line_hash(line) == head
    problems += video_coverage_problems(videos, policy.max_scene_coverage)
    if not seen_head:
        problems.append(f"the ledger never reaches the head {head}: records were removed from its end, or it is "
                        "another ledger")
    return count, problems
