"""Built templates shared by sandboxes side by side, by name and build key (opt-in).

Each sandbox instance has its own state dir and repository, and would build each template
itself: debian-12 takes minutes of CPU. With ``$MCLU_SANDBOX_BUILD_CACHE`` naming a directory
(the test suite sets it: its parallel streams run on two instances), a (name, build key) is
built once: the first builder holds the entry's lock while it builds, the others wait on
it and then hard-link the finished file. The key covers every input of a build (scripts,
parameters, package versions), so a cached file is what a build would make now.

Layout: ``NAME-KEY.xz`` (the template), ``NAME-KEY.json`` (its BuiltImage, written last),
``NAME-KEY.lock``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from mclu.sandbox.images import build as template_build
from mclu.sandbox.images import recipes

log = logging.getLogger(__name__)

BUILD_CACHE_ENV = "MCLU_SANDBOX_BUILD_CACHE"


def build(
    recipe: recipes.Recipe,
    inputs: dict[str, str],
    key: str,
    out_dir: Path,
    work_dir: Path,
    log_path: Path,
    keep_fds: tuple[int, ...] = (),
    force: bool = False,
) -> template_build.BuiltImage:
    """`recipe` built into `out_dir` (as `build.build_template`), or its file taken from the
    cache when it holds this key; `force` builds anew and replaces the cache's entry."""
    cache_env = os.environ.get(BUILD_CACHE_ENV)
    if not cache_env:
        return template_build.build_template(
            recipe, inputs, out_dir, work_dir, log_path, keep_fds=keep_fds
        )
    cache = Path(cache_env)
    cache.mkdir(parents=True, exist_ok=True)
    entry = cache / f"{recipe.name}-{key[:32]}"
    xz, meta = entry.with_name(entry.name + ".xz"), entry.with_name(entry.name + ".json")
    with entry.with_name(entry.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build of this key elsewhere: wait for it
        image = None if force else cached_image(xz, meta)
        if image is not None:
            log.info("%s: taken from the build cache %s", recipe.name, xz)
            link_or_copy(xz, out_dir / image.file)
            return image
        meta.unlink(missing_ok=True)
        image = template_build.build_template(
            recipe, inputs, out_dir, work_dir, log_path, keep_fds=(*keep_fds, lock.fileno())
        )
        part = entry.with_name(entry.name + ".part")
        link_or_copy(out_dir / image.file, part)
        part.replace(xz)
        meta.write_text(json.dumps(asdict(image)) + "\n")
        return image


def cached_image(xz: Path, meta: Path) -> template_build.BuiltImage | None:
    """The entry's BuiltImage when it is whole: its file has the recorded checksum."""
    try:
        image = template_build.BuiltImage(**json.loads(meta.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    try:
        checksum = template_build.sha512_file(xz)
    except OSError:
        return None
    if checksum != image.checksum:
        log.warning("ignoring a damaged build cache entry: %s", xz)
        return None
    return image


def link_or_copy(source: Path, target: Path) -> None:
    """`target` the same file as `source`: a hard link, or a copy across file systems."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
