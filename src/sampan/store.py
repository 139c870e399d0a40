"""The local package store: SAMPAN_HOME/packages/<name>/<version>/.

A package version is built in a temporary directory inside the store, fsynced, and renamed
into place under a per-name lock, so a crash never leaves a half-written version and two
writers never get the same version number.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampan.errors import NotFoundError, PackageError
from sampan.io import atomic_write_bytes, atomic_write_json, fsync_dir, fsync_tree
from sampan.package import (
    CARD,
    MANIFEST,
    Manifest,
    Package,
    check_name,
    file_entries,
    open_package,
    render_model_card,
)


def sampan_home() -> Path:
    """SAMPAN_HOME, default ~/.sampan."""
    return Path(os.environ.get("SAMPAN_HOME") or Path.home() / ".sampan").expanduser()


@dataclass(frozen=True)
class PackageRef:
    name: str
    version: int | None  # None means latest

    @classmethod
    def parse(cls, ref: str) -> PackageRef:
        name, _, version = ref.partition("@")
        check_name(name)
        if version in ("", "latest"):
            return cls(name, None)
        digits = version[1:] if version[:1] in ("v", "V") else version
        if not digits.isdigit() or int(digits) < 1:
            raise PackageError(
                f"Invalid version {version!r} in {ref!r}: use NAME, NAME@latest or NAME@3."
            )
        return cls(name, int(digits))


class Store:
    """Packages under a root directory; name@version and name@latest resolve."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home) if home is not None else sampan_home()
        self.root = self.home / "packages"

    def versions(self, name: str) -> list[int]:
        folder = self.root / check_name(name)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def path_of(self, ref: str) -> Path:
        """Directory of a ref; a path to a package directory is accepted too."""
        candidate = Path(ref)
        if "@" not in ref and (candidate / MANIFEST).is_file():
            return candidate
        parsed = PackageRef.parse(ref)
        versions = self.versions(parsed.name)
        if not versions:
            known = ", ".join(self.names()) or "none yet"
            raise NotFoundError(
                f"No package named {parsed.name!r} in {self.root} (packages: {known}). "
                "Train one with `sampan train` or list them with `sampan packages list`."
            )
        version = versions[-1] if parsed.version is None else parsed.version
        if version not in versions:
            raise NotFoundError(
                f"{parsed.name} has no version {version} (versions: "
                f"{', '.join(map(str, versions))})."
            )
        return self.root / parsed.name / str(version)

    def open(self, ref: str, verify: bool = True) -> Package:
        """Resolve and open a package, checking every file's sha256."""
        return open_package(self.path_of(ref), verify=verify)

    def manifests(self) -> list[Manifest]:
        """Manifests of every version of every package (not checksum-verified: fast)."""
        manifests = []
        for name in self.names():
            for version in self.versions(name):
                with contextlib.suppress(PackageError):
                    manifests.append(open_package(self.root / name / str(version), False).manifest)
        return manifests

    def delete(self, ref: str) -> list[str]:
        """Delete one version (name@N or name@latest) or every version (name); return the refs
        removed."""
        parsed = PackageRef.parse(ref)
        self.path_of(ref)  # a clear NotFoundError when there is nothing to delete
        removed = []
        with self._lock(parsed.name):
            if "@" in ref:
                targets = [self.path_of(ref)]
            else:
                targets = [self.root / parsed.name / str(v) for v in self.versions(parsed.name)]
            for target in targets:
                # Rename first so a crash mid-delete never leaves a half-deleted version visible.
                trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=".deleting-"))
                try:
                    os.replace(target, trash / "version")
                except FileNotFoundError:  # deleted by someone else meanwhile
                    continue
                finally:
                    shutil.rmtree(trash, ignore_errors=True)
                removed.append(f"{parsed.name}@{target.name}")
        return removed

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _next_version(self, name: str) -> int:
        """One past the highest version ever written (deleted ones included), so a number is
        never reused for a different model. Call under the name's lock."""
        mark = self.root / name / ".last-version"
        try:
            last = int(mark.read_text().strip())
        except (FileNotFoundError, ValueError):
            last = 0
        version = max([last, *self.versions(name)]) + 1
        atomic_write_bytes(mark, str(version).encode())
        return version

    def write(
        self,
        name: str,
        manifest_fields: dict[str, Any],
        write_files: Callable[[Path], None],
    ) -> Package:
        """Write a new version of package name atomically and return it, verified.

        write_files(tmpdir) writes the payload (weights, exports); this method adds the
        checksums, the manifest and the model card, then renames the directory into place.
        """
        from sampan import __version__

        check_name(name)
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
        try:
            write_files(tmp)
            with self._lock(name):
                version = self._next_version(name)
                manifest = Manifest(
                    name=name,
                    version=version,
                    created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    sampan_version=__version__,
                    **manifest_fields,
                )
                (tmp / CARD).write_text(render_model_card(manifest), encoding="utf-8")
                manifest.files = file_entries(tmp)
                atomic_write_json(tmp / MANIFEST, manifest.to_dict())
                fsync_tree(tmp)
                final = folder / str(manifest.version)
                os.rename(tmp, final)
                fsync_dir(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return open_package(final)
