"""The journal's copy of the manifests a release was applied with, and the project a revert
rebuilds from it.

The copy is what was applied, byte for byte, but for its secrets:

- the value of a secret environment variable (named like a password or token, or listed in
  `secrets:` of release.yaml) written literally in a manifest becomes a reference `${NAME}`,
  whose place is recorded; a revert puts the variable's value back there, and refuses when it is
  not set;
- a password written into a database's `url:` (or the `journal:` of release.yaml), in the user
  information or a query parameter, is masked (`***`); a revert takes it from today's manifests
  (the same file, or else the same database with the same URL but for the password) and refuses
  to migrate a database whose password it cannot find.

Nothing else is masked: a URL in a command (`docker://registry:5000/app@sha256:...`, an artifact
URL with the token it needs) is stored as it is, since a revert runs it again.

A record is `{"sources": {path: text}, "references": {path: [[offset, NAME], ...]}, "masked":
[path, ...]}`. A record without "references" was written by an older version, which masked every
URL password anywhere in the text: such a copy (or a file kept from one, listed in "legacy") is
used only where no masked password reaches a command.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from . import secrets
from .errors import InputError
from .manifests import Project, load_project, load_yaml, merge_sources, read_sources
from .secrets import MASK, has_masked_password, url_secrets
from .settings import SETTINGS_FILE

Refs = list[list[Any]]  # [[offset, NAME], ...], in the order of the text
_URL_KEYS = {SETTINGS_FILE: "journal"}  # else `url`, in a database's manifest
_LEGACY_MASK = ":" + MASK + "@"


# ------------------------------------------------------------------------ writing the copy


def journal_copy(project: Project) -> dict[str, Any]:
    """The record of `project`'s manifests for the journal."""
    urls = {project.files[name]: spec.url for name, spec in project.databases.items()}
    if project.settings.journal:
        urls[SETTINGS_FILE] = project.settings.journal
    sources: dict[str, str] = {}
    references: dict[str, Refs] = {}
    masked = []
    for path, text in project.sources.items():
        url = urls.get(path)
        sources[path], refs, hidden = _copy_file(path, text, url if url and url_secrets(url) else None)
        if refs:
            references[path] = refs
        if hidden:
            masked.append(path)
    return {"sources": sources, "references": references, "masked": masked}


def _copy_file(path: str, text: str, url: str | None) -> tuple[str, Refs, bool]:
    """One manifest as the journal keeps it: (text, references, whether a password is masked).
    `url`: the file's URL whose password is a secret, if it has one."""
    pattern = secrets.secret_pattern()
    names = {v: n for n, v in secrets.secret_items()}
    # (start, end, replacement, NAME of a reference or None for a mask)
    edits = [(m.start(), m.end(), f"${{{names[m[0]]}}}", names[m[0]])
             for m in pattern.finditer(text)] if pattern else []
    for start, end, new in _password_edits(text, _URL_KEYS.get(path, "url"), url, pattern) if url else []:
        near = [x for x in edits if x[0] < end and start < x[1]]
        if any(s <= start and end <= e and name for s, e, _, name in near):
            continue  # a variable's value holds the whole password: a reference a revert resolves
        if any(s < start or e > end for s, e, _, _ in near):  # hide all of both, not half of one
            start, end, new = min(start, *(x[0] for x in near)), max(end, *(x[1] for x in near)), MASK
        edits = [x for x in edits if x not in near] + [(start, end, new, None)]
    out: list[str] = []
    refs: Refs = []
    copied = length = 0
    for start, end, new, name in sorted(edits):
        out += [text[copied:start], new]
        length += start - copied
        if name is not None:
            refs.append([length, name])
        length += len(new)
        copied = end
    out.append(text[copied:])
    return "".join(out), refs, any(name is None for *_, name in edits)


def _password_edits(text: str, key: str, url: str, values: re.Pattern[str] | None) -> list[tuple[int, int, str]]:
    """Where the secrets of the URL under `key` are written in the manifest, and what replaces
    them: `***` in place when the scalar is written as it reads, else the whole scalar, written
    again. A URL not found that way (under a merge key) has its secrets masked wherever they are."""
    edits = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        root = None
    for k, v in root.value if isinstance(root, yaml.MappingNode) else []:
        if not (isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.ScalarNode)):
            continue
        start, end, value = v.start_mark.index, v.end_mark.index, v.value
        spans = url_secrets(value)
        raw = text[start:end]
        if not spans:
            continue
        if raw[1:-1] == value and raw[:1] in ("'", '"') and raw[-1:] == raw[:1]:
            start += 1
        elif raw != value:  # escapes, folding, a block scalar
            masked = _masked(value, spans)
            masked = values.sub(MASK, masked) if values else masked
            edits.append((start, start + len(raw.rstrip("\n")), json.dumps(masked)))
            continue
        edits += [(start + s, start + e, MASK) for s, e in spans]
    for s, e in url_secrets(url) if not edits else []:
        secret, i = url[s:e], text.find(url[s:e])
        while i != -1:
            if not any(a < i + len(secret) and i < b for a, b, _ in edits):
                edits.append((i, i + len(secret), MASK))
            i = text.find(secret, i + len(secret))
    return edits


def _masked(url: str, spans: Iterable[tuple[int, int]]) -> str:
    out, copied = [], 0
    for s, e in sorted(spans):
        out += [url[copied:s], MASK]
        copied = e
    return "".join(out) + url[copied:]


def merge_copies(before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """Two attempts' records of one release as one (`merge_sources`), references kept in place.

    The merge may write a file again (the inventory): each reference goes through it as a token
    of its own, and is found again where it landed."""
    token = f"release-ref-{uuid.uuid4().hex}-"
    names: list[str] = []

    def tagged(record: dict[str, Any]) -> dict[str, str]:
        out = {}
        for path, text in (record.get("sources") or {}).items():
            pieces, copied = [], 0
            for offset, name in (record.get("references") or {}).get(path, []):
                names.append(name)
                pieces += [text[copied:offset], f"{token}{len(names) - 1}-"]
                copied = offset + len(name) + 3
            out[path] = "".join(pieces) + text[copied:]
        return out

    old, new = tagged(before), tagged(now)
    merged = merge_sources(old, new)
    sources: dict[str, str] = {}
    references: dict[str, Refs] = {}
    found = re.compile(re.escape(token) + r"(\d+)-")
    for path, text in merged.items():
        pieces, refs, copied, length = [], [], 0, 0
        for m in found.finditer(text):
            ref = f"${{{names[int(m[1])]}}}"
            pieces += [text[copied:m.start()], ref]
            length += m.start() - copied
            refs.append([length, names[int(m[1])]])
            length += len(ref)
            copied = m.end()
        sources[path] = "".join(pieces) + text[copied:]
        if refs:
            references[path] = refs

    def flagged(key: str, record: dict[str, Any]) -> set[str]:
        if key == "legacy" and "references" not in record:
            return set(record.get("sources") or {})
        return set(record.get(key) or [])

    def either(key: str) -> list[str]:
        # A file comes from today's attempt when it has one, from the first attempt's otherwise;
        # a file merged from both (the inventory) carries the flags of both.
        mine, theirs = flagged(key, now), flagged(key, before)
        return sorted(p for p in sources
                      if p in mine or (p in theirs and (p not in new or merged[p] != new[p])))

    record: dict[str, Any] = {"sources": sources, "references": references, "masked": either("masked")}
    legacy = either("legacy")
    if legacy:
        record["legacy"] = legacy
    return record


# ------------------------------------------------------------------------ reading it back


def journaled_project(root: Path, manifests: dict[str, Any], databases: Iterable[str] = ()) -> Project:
    """The project a release was applied with, from the journal's record of its manifests.

    References are resolved from the environment; masked passwords come from today's manifests.
    `databases`: the ones the revert migrates, which must have their passwords. Refuses (nothing
    has run yet) rather than build a command other than the one that was applied.
    """
    sources = manifests.get("sources")
    if sources is None:
        return load_project(root)
    legacy = set(sources) if "references" not in manifests else set(manifests.get("legacy") or [])
    references = manifests.get("references") or {}
    masked = set(manifests.get("masked") or [])
    try:
        today = read_sources(Path(root).resolve())
    except InputError:
        today = {}
    plain: dict[str, str] = {}
    unset: dict[str, list[str]] = {}
    for path, text in sources.items():
        refs = references.get(path, [])
        if (refs or path in masked or (path in legacy and _LEGACY_MASK in text)) and path in today \
                and _is_applied(path, text, refs, today[path], path in legacy):
            plain[path] = today[path]  # the file as it was applied, secrets and all
            continue
        plain[path] = _resolve(path, text, refs, unset)
    if unset:
        raise InputError(
            "cannot revert: the journal keeps secrets of the release's manifests as references to "
            "environment variables that are not set now; set them as they were when the release was "
            "applied and run `release revert` again (nothing was reverted)",
            problems=[f"{name} (in {', '.join(paths)})" for name, paths in sorted(unset.items())])
    project = load_project(root, sources=plain)
    secrets.register(project.settings.secrets)
    _passwords_from_today(root, project)
    problems = [f"{project.files[n]}: service {n}: its commands were journaled by an older version of "
                "release, which masked the passwords of URLs in them, and the file changed since"
                for n, s in project.services.items() if project.files[n] in legacy
                and plain[project.files[n]] != today.get(project.files[n])
                and any(_LEGACY_MASK in (c or "") for c in (s.deploy, s.revert, s.health, s.current))]
    problems += [f"{project.files[n]}: database {n}: {MISSING_PASSWORD}" for n in sorted(set(databases))
                 if n in project.databases and has_masked_password(project.databases[n].url)]
    if problems:
        raise InputError("cannot revert exactly what was applied (nothing was reverted); put the files "
                         "back as they were applied, or see below", problems=problems)
    return project


MISSING_PASSWORD = ("url: the journal keeps this URL without its password, and no manifest today has it "
                    "with its password; write the password as ${VAR} (read from the environment when "
                    "it is used) so that a revert can log in")


def _resolve(path: str, text: str, refs: Refs, unset: dict[str, list[str]]) -> str:
    """The journaled `text` with its references replaced by the variables' values; the names of
    those not set go to `unset`."""
    out, copied = [], 0
    for offset, name in refs:
        value = os.environ.get(name)
        if value is None:
            if path not in unset.setdefault(name, []):
                unset[name].append(path)
            continue
        out += [text[copied:offset], value]
        copied = offset + len(name) + 3
    return "".join(out) + text[copied:]


def _is_applied(path: str, copy: str, refs: Refs, text: str, legacy: bool) -> bool:
    """Whether today's `text` of a file is the one its journaled `copy` was made from."""
    if legacy:
        # An older version masked every `scheme://user:PASSWORD@`, and nothing else.
        parts = copy.split(_LEGACY_MASK)
        return re.fullmatch(r":[^@\s]+@".join(map(re.escape, parts)), text) is not None
    try:
        data = load_yaml(text)
    except yaml.YAMLError:
        data = None
    url = None
    if isinstance(data, dict) and (path == SETTINGS_FILE or data.get("kind") == "database"):
        found = data.get(_URL_KEYS.get(path, "url"))
        url = found if isinstance(found, str) and url_secrets(found) else None
    return _copy_file(path, text, url)[:2] == (copy, refs)


def _passwords_from_today(root: Path, project: Project) -> None:
    """A database whose URL the journal keeps masked gets today's URL of the same database, when
    that is the same URL but for its password."""
    masked = [n for n, s in project.databases.items() if has_masked_password(s.url)]
    if not masked:
        return
    try:
        now = load_project(root).databases
    except InputError:
        return
    for name in masked:
        spec = project.databases[name]
        if name in now and _masked(now[name].url, url_secrets(now[name].url)) == spec.url:
            project.nodes[name] = spec.model_copy(update={"url": now[name].url})
