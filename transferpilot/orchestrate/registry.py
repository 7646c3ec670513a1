"""The model registry: GTO (Git Tag Ops, DVC's own registry) over ``dvc.yaml``'s
``artifacts:``, the files of each version read back from DVC's cache by commit.

A version is a Git commit holding the run's ``dvc.lock`` (so its outputs are in DVC's
cache, and on the DVC remote after ``dvc push``) tagged ``predictor@vN.0.0`` by GTO; the
model in service is the version GTO assigns to the ``prod`` stage (``predictor#prod#K``
tags). ``gto show``, ``gto history predictor`` and Iterative Studio read the same tags;
``git push --tags`` and ``dvc push`` carry the registry to another machine.

This module is the one adapter over GTO, Git and ``dvc.api`` for it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferpilot.errors import ConfigError, TransferpilotError
from transferpilot.orchestrate.environment import subprocess_env

#: The artifact ``dvc.yaml`` declares: the trained model folder.
ARTIFACT = "predictor"
#: The stage of the model in service.
PROD = "prod"
#: Who commits and tags when Git has no identity configured (a scheduled worker).
IDENTITY = ("transferpilot", "transferpilot@localhost")


class RegistryError(TransferpilotError):
    """The registry cannot answer: a tag pointing nowhere, a version's files missing."""

    exit_code = 4


@dataclass(frozen=True)
class Version:
    """A registered version: its name (``v3.0.0``) and the commit it tags."""

    version: str
    commit: str

    @property
    def number(self) -> tuple[int, ...]:
        """The SemVer numbers, for ordering: ``v2.0.0`` is ``(2, 0, 0)``."""
        return tuple(int(part) for part in self.version.lstrip("v").split("+")[0].split("."))


def _git(project: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["git", *args], cwd=project, capture_output=True, text=True, env=subprocess_env()
    )
    if check and result.returncode != 0:
        raise RegistryError(f"git {' '.join(args)}: {result.stderr.strip() or result.stdout}")
    return result.stdout.strip()


class Registry:
    """The GTO registry of the Git + DVC project at ``project``."""

    def __init__(self, project: Path) -> None:
        self.root = Path(project).resolve()
        if not (self.root / ".git").exists():
            raise ConfigError(
                f"{self.root} is not a Git repository: the model registry is Git tags (GTO); "
                "`git init && dvc init` (or run in your git + DVC project) first"
            )

    def identity(self) -> tuple[str, str]:
        """Git's configured author, else :data:`IDENTITY`."""
        name = _git(self.root, "config", "user.name", check=False)
        email = _git(self.root, "config", "user.email", check=False)
        return (name, email) if name and email else IDENTITY

    def champion(self) -> Version | None:
        """The version in service: the highest in ``prod``; None before the first promotion."""
        serving = self.in_prod()
        return serving[-1] if serving else None

    def versions(self) -> list[Version]:
        """Every registered version, oldest first."""
        from gto.api import show
        from gto.exceptions import ArtifactNotFound

        try:
            rows = show(self.root, ARTIFACT, registered_only=True)
        except ArtifactNotFound:  # nothing registered yet
            return []
        out = [Version(r["version"], r["commit_hexsha"]) for r in rows]
        return sorted(out, key=lambda v: v.number)

    def in_prod(self) -> list[Version]:
        """The versions GTO holds in ``prod`` (assigned, not unassigned since), lowest first:
        the highest is the one in service (GTO orders a stage's versions by SemVer)."""
        from gto.api import find_versions_in_stage

        try:
            found = find_versions_in_stage(self.root, ARTIFACT, PROD, versions_per_stage=-1)
        except Exception as err:  # GTO's own errors: an artifact unknown, a tag unreadable
            if "cannot find" in str(err).lower() or "not found" in str(err).lower():
                return []
            raise RegistryError(f"the registry cannot be read: {err}") from None
        found = found if isinstance(found, list) else [found] if found else []
        return sorted((Version(v.version, v.commit_hexsha) for v in found), key=lambda v: v.number)

    def unassign(self, version: Version, message: str) -> None:
        """Take ``version`` out of ``prod`` (GTO's ``deprecate``: a ``predictor#prod!#K`` tag)."""
        from gto.api import unassign

        name, email = self.identity()
        unassign(self.root, ARTIFACT, stage=PROD, version=version.version, message=message,
                 author=name, author_email=email)  # fmt: skip

    def find(self, name: str) -> Version:
        """``prod``, ``vN.0.0`` or ``predictor@vN.0.0``: the version it names."""
        name = name.removeprefix(f"{ARTIFACT}@").removeprefix(f"{ARTIFACT}#")
        if name == PROD:
            found = self.champion()
            if found is None:
                raise RegistryError("no version is in prod yet: run `transferpilot promote` first")
            return found
        for version in self.versions():
            if version.version == name:
                return version
        raise RegistryError(f"no version {name} in the registry (`gto show {ARTIFACT}` lists them)")

    def read(self, version: Version, path: str) -> bytes:
        """The bytes of ``path`` as ``version`` recorded it (DVC outputs from the cache, or
        the DVC remote when the cache lacks them)."""
        import dvc.api

        try:
            return dvc.api.read(path, repo=str(self.root), rev=version.commit, mode="rb")
        except Exception as err:  # a tag pointing nowhere, a file gone from the cache
            raise RegistryError(
                f"{ARTIFACT} {version.version} ({version.commit[:8]}): cannot read {path} "
                f"({type(err).__name__}: {err}); `dvc pull` or `dvc fetch --all-tags` brings "
                "missing files from the remote"
            ) from None

    def read_json(self, version: Version, path: str) -> Any:
        try:
            return json.loads(self.read(version, path))
        except (ValueError, UnicodeDecodeError) as err:
            raise RegistryError(
                f"{ARTIFACT} {version.version}: {path} is damaged ({err})"
            ) from None

    def materialise(self, version: Version, folder: str, dest: Path) -> Path:
        """``folder`` as ``version`` recorded it, copied under ``dest`` (once: kept by commit)."""
        from dvc.api import DVCFileSystem

        target = dest / f"{version.version}-{version.commit[:12]}"
        if target.is_dir():
            return target / Path(folder).name
        tmp = dest / f".{target.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            fs = DVCFileSystem(str(self.root), rev=version.commit)
            fs.get(folder, str(tmp / Path(folder).name), recursive=True)
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RegistryError(
                f"{ARTIFACT} {version.version}: cannot get {folder} ({type(err).__name__}: "
                f"{err}); `dvc pull` brings missing files from the remote"
            ) from None
        tmp.rename(target)
        return target / Path(folder).name

    def commit(self, paths: list[str], message: str) -> str:
        """Commit ``paths`` (those that exist or are tracked), only them; the new HEAD."""
        name, email = self.identity()
        present = [p for p in paths if (self.root / p).exists()]
        _git(self.root, "add", "--", *present)
        staged = _git(self.root, "diff", "--cached", "--name-only", "--", *present)
        if staged:
            _git(
                self.root, "-c", f"user.name={name}", "-c", f"user.email={email}",
                "commit", "-q", "-m", message, "--", *present,
            )  # fmt: skip
        return _git(self.root, "rev-parse", "HEAD")

    def next_version(self) -> str:
        """The name the next registered version gets: the next major version."""
        return f"v{max((v.number[0] for v in self.versions()), default=0) + 1}.0.0"

    def register(self, commit: str, version: str, message: str) -> Version:
        """Tag ``commit`` as ``version``."""
        from gto.api import register

        name, email = self.identity()
        register(self.root, ARTIFACT, commit, version=version, message=message,
                 author=name, author_email=email)  # fmt: skip
        return Version(version, commit)

    def assign(self, version: Version, message: str) -> None:
        """Put ``version`` in ``prod`` (again, for a roll-back)."""
        from gto.api import assign

        name, email = self.identity()
        assign(self.root, ARTIFACT, PROD, version=version.version, message=message,
               force=True, author=name, author_email=email)  # fmt: skip


def dvc_commit(project: Path, stage: str) -> None:
    """``dvc commit --force STAGE``: record a stage's current deps and outputs in
    ``dvc.lock`` without running it (its outputs are known to be unchanged)."""
    cmd = [sys.executable, "-m", "dvc", "commit", "--force", stage]
    result = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=subprocess_env())
    if result.returncode != 0:
        raise RegistryError(f"dvc commit {stage}: {result.stdout}{result.stderr}".strip())
