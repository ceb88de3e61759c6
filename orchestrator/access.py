"""Which journal a command uses, and as which project: `--journal`, `RELEASE_JOURNAL`, `journal:`
in release.yaml or the checkout's own file; the project id that keeps a shared journal's
records apart; the secrets release.yaml names, registered before anything prints."""

from __future__ import annotations

import os
from pathlib import Path

from . import settings
from .errors import InputError
from .journal import Journal, default_url, normalise_url
from .logs import get_logger
from .secrets import register as register_secrets


def journal_url(project_dir: Path | str, url: str | None) -> str:
    """--journal, else RELEASE_JOURNAL, else `journal:` in release.yaml, else this checkout's file."""
    root = Path(project_dir).resolve()
    chosen = url or os.environ.get("RELEASE_JOURNAL") or settings.load(root).journal
    if chosen:
        if "${" not in chosen:
            return chosen
        from .migrations import resolve_url  # only for a journal URL with ${VAR} in it

        return resolve_url(chosen, root, node="journal")
    if os.environ.get("CI") == "true":
        # A CI runner's checkout is thrown away with its journal: the next run would not know
        # what this one deployed, nor could a colleague revert it.
        get_logger().warning("journal.per_checkout", message=(
            f"the journal is this checkout's own file ({root / '.release' / 'journal.db'}); set "
            "`journal:` in services.d/release.yaml (or RELEASE_JOURNAL) to share one"))
    return default_url(root)


def open_journal(root: Path, url: str | None, *, create: bool) -> Journal | None:
    """The project's view of its journal: only its own records (see settings.project_id)."""
    chosen = journal_url(root, url)
    return Journal.open(chosen, create=create, project=project_id(root, chosen))


def project_id(root: Path, chosen: str) -> str:
    declared = settings.load(root).journal
    own = {normalise_url(u) for u in (default_url(root), journal_url(root, declared) if declared else None) if u}
    return settings.project_id(root, own_journal=normalise_url(chosen) in own)


def register_settings_secrets(root: Path) -> None:
    """`secrets:` of release.yaml, for the commands that work without the other manifests. A
    broken file leaves nothing to register; reading the journal's address reports it if needed."""
    try:
        register_secrets(settings.load(root).secrets)
    except InputError:
        pass
