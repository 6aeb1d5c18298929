"""The sandbox's virt-builder repository: build what changed, sign, swap in atomically.

Layout under the state dir (``$MCLU_SANDBOX_DIR``, default /var/tmp/mclu-sandbox)::

    repo -> .repo-<id>/          the live repository: a symlink, replaced atomically
        index, index.asc         the index and its clearsigned copy (what virt-builder reads)
        key.asc                  the public key that signed it
        NAME.xz                  one per template
        manifest.json            build key, revision and inputs of each template
        virt-builder/repos.d/mclu-sandbox.conf   (VIRT_BUILDER_DIRS=repo finds it)
    repo-gnupg/                  the private GNUPGHOME holding the signing key
    logs/NAME.log                the last build's output per template
    .build-<random>/             a build in progress; removed if it was interrupted

A new repository is assembled in a `.build-*` directory (unchanged templates are hard-linked
from the live one), renamed to `.repo-*` and published by replacing the `repo` symlink, so a
reader sees either the old or the new repository, never a half-built one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mclu.errors import UsageError
from mclu.sandbox import config as sandbox_config
from mclu.sandbox.images import build, build_cache, index, recipes, signing
from mclu.sandbox.images.inputs import recipe_inputs

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = sandbox_config.DEFAULT_STATE_DIR
REPO_ID = "mclu-sandbox"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Built:
    """What the manifest records about one template of the repository."""

    name: str
    build_key: str
    revision: int
    inputs: dict[str, str]
    file: str
    size: int
    allocated: int
    compressed_size: int
    checksum: str
    seconds: float
    built_at: str


def default_state_dir() -> Path:
    """``$MCLU_SANDBOX_DIR`` or /var/tmp/mclu-sandbox."""
    return Path(os.environ.get("MCLU_SANDBOX_DIR") or DEFAULT_STATE_DIR)


def repo_dir(state_dir: Path) -> Path:
    """The live repository's stable path (a symlink to the current generation)."""
    return state_dir / "repo"


def repo_conf(repo: Path) -> Path:
    """The repos.d .conf of a repository."""
    return repo / "virt-builder" / "repos.d" / f"{REPO_ID}.conf"


def virt_builder_env(repo: Path, cache_dir: Path) -> dict[str, str]:
    """Environment for virt-builder to use only this repository, and a private cache.

    virt-builder reads ``$VIRT_BUILDER_DIRS/virt-builder/repos.d`` and also
    ``$XDG_CONFIG_HOME/virt-builder/repos.d``: the latter is pointed below `cache_dir` so a
    user's own repositories (~/.config) do not join in. It caches templates by name and
    revision only, so give each sandbox its own cache.
    """
    return {
        "VIRT_BUILDER_DIRS": str(repo),
        "XDG_CONFIG_HOME": str(cache_dir / "config"),
        "XDG_CACHE_HOME": str(cache_dir / "cache"),
    }


def read_manifest(repo: Path) -> dict[str, Built]:
    """The templates a repository holds, by name; empty if it has none (or is missing)."""
    try:
        raw: dict[str, dict[str, Any]] = json.loads((repo / MANIFEST).read_text())
        return {name: Built(**fields) for name, fields in raw.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError) as error:  # an older or damaged manifest: rebuild all
        log.warning("ignoring %s: %s", repo / MANIFEST, error)
        return {}


def build_repository(
    state_dir: Path, *, names: Iterable[str] | None = None, force: bool = False
) -> Path:
    """Make sure the repository holds the named templates (default: all but the on-demand
    ones), built from their
    current inputs; return its path (``STATE_DIR/repo``).

    Templates whose build key is unchanged are kept as they are (no work at all if none
    changed), unless `force`. A rebuilt template gets the next revision. Templates not named
    are carried over. Raises UsageError for an unknown name, TemplateBuildError when a build
    step fails (the live repository is then left as it was).
    """
    wanted = _check_names(names)
    state_dir.mkdir(parents=True, exist_ok=True)
    with _locked(state_dir) as lock_fd:
        _remove_leftovers(state_dir)
        repo = repo_dir(state_dir)
        live = read_manifest(repo)
        plans = {r.name: _plan(r, live.get(r.name), force, repo) for r in wanted}
        todo = {name: plan for name, plan in plans.items() if plan is not None}
        if not todo and _complete(repo, live):
            log.info("repository %s is up to date", repo)
            return repo
        _publish(state_dir, live, todo, lock_fd, force)
        return repo


def _check_names(names: Iterable[str] | None) -> list[recipes.Recipe]:
    if names is None:
        return [r for r in recipes.RECIPES.values() if not r.on_demand]
    names = list(names)
    unknown = sorted(set(names) - set(recipes.RECIPES))
    if unknown:
        raise UsageError(
            f"unknown template(s) {', '.join(unknown)}; known: {', '.join(recipes.RECIPES)}"
        )
    return [recipes.RECIPES[n] for n in dict.fromkeys(names)]


def _plan(
    recipe: recipes.Recipe, current: Built | None, force: bool, repo: Path
) -> tuple[recipes.Recipe, dict[str, str], str] | None:
    """(recipe, inputs, key) when the template must be built, None when it is current."""
    inputs = recipe_inputs(recipe)
    key = recipes.build_key(recipe, recipes.recipe_scripts(recipe), inputs)
    present = current is not None and (repo / current.file).is_file()
    if current is not None and present and current.build_key == key and not force:
        log.info("%s: cached (revision %d, key %s)", recipe.name, current.revision, key[:12])
        return None
    reason = (
        "forced"
        if force
        else "new"
        if current is None
        else "file missing"
        if not present
        else "inputs changed"
    )
    log.info("%s: building (%s, key %s)", recipe.name, reason, key[:12])
    return recipe, inputs, key


def _complete(repo: Path, live: dict[str, Built]) -> bool:
    files = ["index", "index.asc", "key.asc", *(b.file for b in live.values())]
    return repo_conf(repo).is_file() and all((repo / f).is_file() for f in files)


def _publish(
    state_dir: Path,
    live: dict[str, Built],
    todo: dict[str, tuple[recipes.Recipe, dict[str, str], str]],
    lock_fd: int,
    force: bool = False,
) -> None:
    """Assemble a new generation with `todo` rebuilt, sign it, and make it the live one.

    The build steps inherit the lock (`lock_fd`): should this process be killed, the next
    build waits for its orphaned steps instead of removing files under them.
    """
    repo = repo_dir(state_dir)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=state_dir))
    try:
        os.chmod(staging, 0o755)
        work = staging / ".work"
        work.mkdir()
        (state_dir / "logs").mkdir(exist_ok=True)
        manifest = dict(live)
        for name, (recipe, inputs, key) in todo.items():
            log_path = state_dir / "logs" / f"{name}.log"
            log_path.write_text("")
            image = build_cache.build(
                recipe, inputs, key, staging, work, log_path, keep_fds=(lock_fd,), force=force
            )
            previous = live.get(name)
            manifest[name] = Built(
                name=name,
                build_key=key,
                revision=previous.revision + 1 if previous else 1,
                inputs=inputs,
                built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **asdict(image),
            )
            log.info(
                "%s: built in %.1f s: %d MiB virtual, %.1f MiB data, %.1f MiB xz",
                name,
                image.seconds,
                image.size >> 20,
                image.allocated / 2**20,
                image.compressed_size / 2**20,
            )
        build.remove_tree(work)
        for name, built in list(manifest.items()):
            if name in todo:
                continue
            if (repo / built.file).is_file() and name in recipes.RECIPES:
                os.link(repo / built.file, staging / built.file)
            else:
                del manifest[name]
        _write_metadata(state_dir, staging, repo, manifest)
        generation = state_dir / (".repo-" + staging.name.removeprefix(".build-"))
        staging.rename(generation)
    except BaseException:
        build.remove_tree(staging)
        raise
    old = repo.resolve() if repo.is_symlink() else None
    link = state_dir / f".repo-link-{os.getpid()}"
    link.unlink(missing_ok=True)
    link.symlink_to(generation.name)
    link.replace(repo)  # rename(2) over the old symlink: the atomic switch
    log.info("published %s -> %s", repo, generation.name)
    if old is not None and old != generation:
        build.remove_tree(old)


def index_entries(manifest: dict[str, Built]) -> list[index.IndexEntry]:
    """The index entries of the templates in `manifest` (unknown names left out).

    A recipe's `also` names are published from the same file, with its revision.
    """
    return [
        index.IndexEntry(
            name=name,
            title=title,
            osinfo=r.osinfo,
            file=b.file,
            revision=b.revision,
            checksum=b.checksum,
            size=b.size,
            compressed_size=b.compressed_size,
            notes=notes,
        )
        for b in manifest.values()
        if (r := recipes.RECIPES.get(b.name))
        for name, (title, notes) in {b.name: (r.title, r.notes), **r.also}.items()
    ]


def _write_metadata(state_dir: Path, staging: Path, repo: Path, manifest: dict[str, Built]) -> None:
    """index, index.asc, key.asc, the repos.d conf and the manifest of a new generation."""
    (staging / "index").write_text(index.render_index(index_entries(manifest)))
    with signing.gnupg(state_dir / "repo-gnupg") as gpg:
        fpr = gpg.ensure_key()
        gpg.export_public(fpr, staging / "key.asc")
        gpg.clearsign(fpr, staging / "index", staging / "index.asc")
    conf = repo_conf(staging)
    conf.parent.mkdir(parents=True)
    # The conf names the stable path `repo`, not this generation's directory.
    conf.write_text(
        index.render_repo_conf(
            REPO_ID,
            (repo / "index.asc").absolute().as_uri(),
            (repo / "key.asc").absolute().as_uri(),
        )
    )
    (staging / MANIFEST).write_text(
        json.dumps({name: asdict(b) for name, b in sorted(manifest.items())}, indent=2) + "\n"
    )


@contextmanager
def _locked(state_dir: Path) -> Iterator[int]:
    """One builder at a time per state dir; yields the lock's file descriptor.

    An flock is released when the last process holding its descriptor exits.
    """
    with (state_dir / "repo.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another build of %s", state_dir)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield lock.fileno()


def _remove_leftovers(state_dir: Path) -> None:
    """Remove interrupted builds and generations that `repo` no longer points to."""
    repo = repo_dir(state_dir)
    live = repo.resolve() if repo.is_symlink() else None
    for path in state_dir.glob(".build-*"):
        log.info("removing interrupted build %s", path.name)
        build.remove_tree(path)
    for path in state_dir.glob(".repo-*"):
        if path.is_symlink():
            path.unlink()
        elif path != live:
            build.remove_tree(path)
