"""Compare what the source holds now with what the index holds: what to embed, re-label, remove, or keep."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from simsearch.audio import containers
from simsearch.errors import AudioError
from simsearch.indexing.sources import Item, NotRegularFile, Unreadable, sha256_regular
from simsearch.indexing.writer import ErrorLog
from simsearch.store.folder import IndexDir


@dataclass
class Plan:
    """One run's work: files to embed, rows to re-label, paths whose rows go, and what was left as it was."""

    todo: list[Item] = field(default_factory=list)
    shas: dict[str, str] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)  # indexed before, content differs now
    relabel: dict[str, Item] = field(default_factory=dict)  # same content, new label or metadata
    remove: set[str] = field(default_factory=set)  # really absent now: their rows go
    skipped: int = 0
    next_id: int = 0


def really_absent(path: str) -> bool:
    """True only when the path is gone for sure; a permission error or a dead mount says nothing about it."""
    if containers.split_member(path) is not None:
        return not containers.member_exists(path)
    if containers.SEP in path and not os.path.lexists(path):  # a member whose container is gone
        return really_absent(path.rpartition(containers.SEP)[0])
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def content_sha256(path: str) -> str:
    """sha256 of a file's bytes, or of a clip's bytes inside a container (an unreadable member is an OSError)."""
    if containers.split_member(path) is None:
        return sha256_regular(path)
    try:
        return containers.member_sha256(path)
    except AudioError as e:
        raise OSError(str(e)) from None


def _under(path: str, folders: list[str]) -> bool:
    return any(path.startswith(f.rstrip("/") + "/") for f in folders)


def _report(unreadable: list[Unreadable], done: dict, errors: ErrorLog) -> None:
    """Log what the walk or the manifest could not use, saying when indexed rows were kept for it."""
    for u in unreadable:
        if u.folder:
            n = sum(1 for p in done if _under(p, [u.path]))
            errors.add(u.path, u.reason + (f"; kept the {n} indexed files under it" if n else ""))
        else:
            errors.add(u.path, u.reason + ("; kept its rows from the last run" if u.path in done else ""))


def make_plan(d: IndexDir, items: list[Item], unreadable: list[Unreadable], src: Path, errors: ErrorLog,
              info: dict | None, progress: bool) -> Plan:
    """Hash every item and compare with the live rows; report what cannot be read without losing its rows.

    A file that exists but cannot be read now (permissions, a folder that cannot be listed, a dangling
    link, a pipe where a file was) keeps its rows from the last run; only paths that are really absent
    lose theirs.
    """
    live = d.live_rows(["id", "path", "sha256", "label", "metadata"])
    ids = live.column("id").to_pylist()
    done: dict[str, tuple] = {}
    rows_of: dict[str, int] = {}
    for p, sha, label, meta in zip(*(live.column(c).to_pylist() for c in ("path", "sha256", "label", "metadata"))):
        done.setdefault(p, (sha, label, meta))
        rows_of[p] = rows_of.get(p, 0) + 1
    plan = Plan(next_id=max(int(max(ids, default=-1)) + 1, int((info or {}).get("next_id", 0))))
    dead_folders = [u.path for u in unreadable if u.folder]
    _report(unreadable, done, errors)
    for item in tqdm(items, desc="hashing", unit="file", disable=not progress):
        try:
            sha = content_sha256(item.path)
        except NotRegularFile as e:
            errors.add(item.path, str(e) + ("; kept its rows from the last run" if item.path in done else ""))
            continue
        except OSError as e:
            reason = f"cannot read ({e.strerror or e})"
            if item.path in done and really_absent(item.path):
                plan.remove.add(item.path)
                reason += "; removed its rows"
            elif item.path in done:
                reason += "; kept its rows from the last run"
            errors.add(item.path, reason)
            continue
        old = done.get(item.path)
        if old and old[0] == sha:
            plan.skipped += 1
            if (old[1], old[2]) != (item.label, item.metadata_json()):
                plan.relabel[item.path] = item
            continue
        if old:
            plan.changed.add(item.path)
        plan.shas[item.path] = sha
        plan.todo.append(item)
    if src.is_dir() or containers.is_tar(src):  # what the folder, shard or dataset no longer holds goes
        end = containers.SEP if containers.is_dataset(src) or containers.is_tar(src) else "/"
        roots = {str(src.resolve()) + end, str(src.absolute()) + end}
        seen = {i.path for i in items} | {u.path for u in unreadable}
        plan.remove |= {p for p in done if any(p.startswith(r) for r in roots) and p not in seen
                        and not _under(p, dead_folders) and really_absent(p)}
    return plan
