"""Output folders that are either complete or untouched.

A command that writes a folder first checks the target (:func:`check_output_folder`: not a file,
not a folder of unrelated files, not a previous run unless the user said ``--overwrite``), then
writes everything into a hidden staging folder beside it (:class:`StagedFolder`) and renames that
into place at the end. A run that fails, or is stopped before its outputs exist, leaves the
target exactly as it was; a run that is replaced is replaced whole, never mixed with a new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import click

__all__ = ["check_output_folder", "StagedFolder"]


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_output_folder(path: str | os.PathLike[str], *, markers: Iterable[str],
                        overwrite: bool, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot, or must not, receive a new run; return it.

    ``markers`` are the file names that show a folder holds a run. Creates nothing."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise click.BadParameter(f"{target} is a file, not a folder", param_hint=f"'{flag}'")
    anchor = _nearest_existing(target.absolute().parent)
    if not anchor.is_dir():
        raise click.BadParameter(f"{target} lies under {anchor}, which is a file",
                                 param_hint=f"'{flag}'")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise click.BadParameter(f"cannot create {target}: {anchor} is not writable",
                                 param_hint=f"'{flag}'")
    if target.is_dir():
        entries = [e.name for e in target.iterdir()]
        held = sorted(set(entries) & set(markers))
        if held and not overwrite:
            raise click.BadParameter(
                f"{target} already holds a run ({', '.join(held)}); pass --overwrite to replace "
                f"it, or choose another {flag}", param_hint=f"'{flag}'")
        if entries and not held:
            raise click.BadParameter(
                f"{target} holds other files ({', '.join(sorted(entries)[:3])}"
                f"{', …' if len(entries) > 3 else ''}); a run goes into a new or empty folder, "
                f"or replaces a previous run with --overwrite", param_hint=f"'{flag}'")
        if not os.access(target, os.W_OK | os.X_OK) or not os.access(target.parent, os.W_OK):
            raise click.BadParameter(f"cannot replace {target}: not writable",
                                     param_hint=f"'{flag}'")
    return target


class StagedFolder:
    """A hidden folder beside ``target`` to write into; :meth:`commit` renames it to ``target``
    (replacing what was there), and leaving the ``with`` block without a commit removes it, and
    any parent folder it had to create, so the file system is as it was."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target).absolute()
        self.path: Path | None = None
        self._created: list[Path] = []
        self._committed = False

    def __enter__(self) -> StagedFolder:
        missing = []
        probe = self.target.parent
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for folder in reversed(missing):
            folder.mkdir()
            self._created.append(folder)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.partial-",
                                          dir=self.target.parent))
        umask = os.umask(0)
        os.umask(umask)
        self.path.chmod(0o777 & ~umask)  # mkdtemp's 0700 is for the staging only
        return self

    def commit(self) -> Path:
        """Put the staged folder in place of ``target``; return ``target``."""
        assert self.path is not None, "commit() outside the with block"
        aside = None
        if self.target.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-",
                                          dir=self.target.parent))
            os.replace(self.target, aside / "run")
        try:
            os.replace(self.path, self.target)
        except BaseException:
            if aside is not None:  # put the previous run back
                os.replace(aside / "run", self.target)
                aside.rmdir()
            raise
        self._committed = True
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        return self.target

    def discard(self) -> None:
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:  # something else was put there meanwhile: leave it
                break
        self._created.clear()

    def __exit__(self, *exc_info: object) -> None:
        if not self._committed:
            self.discard()
