"""Project settings: `services.d/release.yaml`, what belongs to the whole release repository (the
shared journal, notifications, hooks, secrets) rather than to one service or host.

Read on its own, before and apart from the other manifests: `status` and `history` need the
journal's address even when a service manifest is broken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InputError

SETTINGS_FILE = "services.d/release.yaml"
DEFAULT_PROJECT = "default"  # the project id of a repository in a journal of its own (see project_id)
EVENTS = ("started", "applied", "failed", "interrupted", "reverted", "revert_failed")
Event = Literal["started", "applied", "failed", "interrupted", "reverted", "revert_failed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Webhook(_Strict):
    url: str  # ${VAR} is taken from the environment when the notification is sent
    events: list[Event] = Field(default_factory=lambda: list(EVENTS))
    timeout: float = Field(5, gt=0, le=60)


class Hooks(_Strict):
    pre_apply: str | None = None  # exits non-zero: the apply is refused before anything changed
    post_apply: str | None = None
    on_failure: str | None = None


class Settings(_Strict):
    journal: str | None = None  # the default journal URL for every checkout and CI runner
    project: str | None = Field(None, min_length=1, max_length=255)  # its id in a journal shared by several
    notify: list[Webhook] = Field(default_factory=list)
    hooks: Hooks = Field(default_factory=Hooks)
    secrets: list[str] = Field(default_factory=list)  # environment variables masked everywhere

    @field_validator("project")
    @classmethod
    def _project(cls, value: str | None) -> str | None:
        if value is not None and (value != value.strip() or not value.isprintable()):
            raise ValueError("a project id is printable text with no leading or trailing space")
        return value

    @field_validator("secrets")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not v.replace("_", "a").isalnum() or v[:1].isdigit()]
        if bad:
            raise ValueError(f"not environment variable names: {', '.join(map(repr, bad))}")
        return value


def parse(text: str, path: str = SETTINGS_FILE) -> Settings:
    from .manifests import format_validation
    from .yamlload import parse_manifest

    data, problems = parse_manifest(path, text)
    if problems:
        raise InputError("invalid manifests", problems=problems)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise InputError("invalid manifests", problems=format_validation(path, exc)) from None


def load(root: Path) -> Settings:
    """The settings of the project at `root`; defaults when it has no release.yaml."""
    path = Path(root) / SETTINGS_FILE
    if not path.is_file():
        return Settings()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("invalid manifests", problems=[f"{SETTINGS_FILE}: cannot be read: {exc}"]) from None
    return parse(text)


def project_id(root: Path, *, own_journal: bool) -> str:
    """This project's id in its journal, which keeps each project's records apart.

    `project:` when set. Otherwise, in the repository's own journal (this checkout's file, or the
    one `journal:` names for every checkout) DEFAULT_PROJECT: every checkout is the same project
    wherever it lies. In any other journal (--journal, RELEASE_JOURNAL), which other projects may
    share, the name of the top directory of the git repository holding the project (a linked
    worktree counts as its main repository), else of the project directory: two checkouts under
    different directory names are then two projects, hence `project:` for a shared journal.
    """
    root = Path(root).resolve()
    configured = load(root).project
    if configured:
        return configured
    if own_journal:
        return DEFAULT_PROJECT
    return _repository_name(root) or root.name or DEFAULT_PROJECT


def _repository_name(root: Path) -> str | None:
    for top in (root, *root.parents):
        dotgit = top / ".git"
        if dotgit.is_dir():
            return top.name
        if dotgit.is_file():
            try:
                gitdir = Path(dotgit.read_text().partition("gitdir:")[2].strip())
            except OSError:
                return top.name
            gitdir = gitdir if gitdir.is_absolute() else (top / gitdir).resolve()
            if gitdir.parent.name == "worktrees":  # .../REPO/.git/worktrees/NAME or .../REPO.git/worktrees/NAME
                common = gitdir.parent.parent
                return common.parent.name if common.name == ".git" else common.name.removesuffix(".git")
            return top.name  # a submodule: its own directory
    return None
