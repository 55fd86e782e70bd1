"""tritonobs.export: compressed-tensors checkpoints of a calibrated model.

The tensors are checked against values the tests compute themselves (scales from the observed
ranges, weights quantized by compressed-tensors' formulas, int4 packed by compressed-tensors' own
``pack_to_int32``); the folders are loaded by ``transformers`` (which applies the input scales
on CPU by fake quantization) and compared with the float model: all-MiniLM-L6-v2 on held-out
sentences, and a tiny random Llama whose ``lm_head`` stays in float.
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.ao.quantization.observer as ao
from safetensors.torch import load_file, save_file
from torch import nn

import tritonobs
from tests.tiny_llama import write_tiny_llama
from tritonobs._cli_calibrate import default_model_path, load_model, make_batches, sample_texts
from tritonobs.calibrate import calibrate
from tritonobs.export import (
    ExportError,
    add_export_arguments,
    check_export_args,
    export_compressed_tensors,
    export_from_args,
)

transformers = pytest.importorskip("transformers")
try:
    import compressed_tensors
except ImportError:
    compressed_tensors = None

needs_compressed_tensors = pytest.mark.skipif(
    compressed_tensors is None,
    reason="compressed-tensors is not installed: transformers cannot load a compressed-tensors "
    "checkpoint without it (pip install compressed-tensors)",
)

SYMMETRIC_INT8 = tritonobs.MinMaxObserver.with_args(
    dtype=torch.qint8, qscheme=torch.per_tensor_symmetric
)
FP8_MAX = 448.0
INT8_HALF_RANGE = 127.5  # (127 - (-128)) / 2: compressed-tensors' and torch.ao's symmetric bound
INT4_HALF_RANGE = 7.5
# The first 16 sample lines calibrate (2 batches of 8); the last 16 are held out.
CALIBRATION = {"batches": 2, "batch_size": 8, "seq_len": 64}
HELD_OUT = 16


def fp8_bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8)


def linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def observed_amax(result, name: str) -> torch.Tensor:
    observer = result[f"{name}.input"].observer
    return torch.max(-observer.min_val, observer.max_val).reshape(1)


def embeddings(model: nn.Module, encoded) -> torch.Tensor:
    """Mean-pooled last hidden states (all-MiniLM-L6-v2's sentence embedding)."""
    with torch.inference_mode():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


@pytest.fixture(scope="module")
def minilm():
    folder = default_model_path()
    model, tokenizer = load_model(folder, torch.float32, quiet=True)
    texts = sample_texts()
    batches = make_batches(tokenizer, texts, model, **CALIBRATION)
    held_out = tokenizer(texts[-HELD_OUT:], padding=True, return_tensors="pt")
    reference = embeddings(model, held_out)
    return {
        "folder": folder,
        "model": model,
        "batches": batches,
        "held_out": held_out,
        "reference": reference,
    }


def cosines(folder: Path, minilm) -> torch.Tensor:
    """Per held-out sentence: cosine of the export's embedding with the float model's. The
    folder loads with every checkpoint tensor used and none missing."""
    quantized, info = transformers.AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    embedding = embeddings(quantized.eval(), minilm["held_out"])
    return torch.cosine_similarity(embedding, minilm["reference"])


@pytest.fixture(scope="module")
def results(minilm):
    model, batches = minilm["model"], minilm["batches"]
    return {
        "affine": calibrate(model, batches, progress=False),
        "symmetric": calibrate(model, batches, observer=SYMMETRIC_INT8, progress=False),
    }


@pytest.fixture(scope="module")
def exports(minilm, results, tmp_path_factory):
    """``exports(scheme, calibration)``: the MiniLM export, written once per module."""
    made: dict[tuple[str, str], Path] = {}

    def get(scheme: str, calibration: str) -> Path:
        if (scheme, calibration) not in made:
            folder = tmp_path_factory.mktemp(f"{scheme}-{calibration}")
            made[scheme, calibration] = export_compressed_tensors(
                minilm["model"], results[calibration], folder, scheme
            )
        return made[scheme, calibration]

    return get


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random 2-layer Llama folder with tied embeddings: hidden size 128 (w4a16 takes the
    attention and gate/up projections), intermediate size 200 (it cannot take down_proj)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    write_tiny_llama(
        folder, sample_texts(), hidden_size=128, intermediate_size=200, tie_word_embeddings=True
    )
    model, tokenizer = load_model(folder, torch.float32, quiet=True)
    batches = make_batches(tokenizer, sample_texts(), model, batches=2, batch_size=4, seq_len=16)
    return {"folder": folder, "model": model, "batches": batches}


@pytest.fixture(scope="module")
def llama_result(tiny_llama):
    return calibrate(tiny_llama["model"], tiny_llama["batches"], progress=False)


@needs_compressed_tensors
@pytest.mark.parametrize(
    ("scheme", "calibration", "mean_floor", "min_floor"),
    [
        # Mean floors: the figures. Measured here (2 calibration batches): mean / min
        # cosine 0.9975 / 0.9962 (fp8), 0.9815 / 0.9633 (int8 symmetric), 0.9923 / 0.9866
        # (int8 affine), 0.9437 / 0.9172 (w4a16).
        ("fp8", "affine", 0.996, 0.99),
        ("int8", "symmetric", 0.967, 0.95),
        ("int8", "affine", 0.967, 0.95),
        ("w4a16", "affine", 0.917, 0.90),
    ],
)
def test_export_loads_in_transformers_close_to_float(
    minilm, exports, scheme, calibration, mean_floor, min_floor
) -> None:
    cos = cosines(exports(scheme, calibration), minilm)
    assert cos.mean() >= mean_floor and cos.min() >= min_floor, cos


def test_fp8_tensors_and_config(minilm, results, exports) -> None:
    """Per Linear: FP8 weight = (W / s).clamp(+-448) with s = row absmax / 448, input_scale =
    the calibrated amax / 448 of the same run, bit for bit; the config vLLM reads."""
    result = results["affine"]
    saved = load_file(str(exports("fp8", "affine") / "model.safetensors"))
    layers = linears(minilm["model"])
    assert len(layers) == 37
    for name, linear in layers.items():
        w = linear.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True) / FP8_MAX
        expected = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        assert saved[f"{name}.weight"].dtype == torch.float8_e4m3fn
        assert torch.equal(fp8_bits(saved[f"{name}.weight"]), fp8_bits(expected)), name
        assert torch.equal(saved[f"{name}.weight_scale"], scale), name
        assert torch.equal(saved[f"{name}.input_scale"], observed_amax(result, name) / FP8_MAX)
        assert f"{name}.input_zero_point" not in saved
        assert torch.equal(saved[f"{name}.bias"], linear.bias.detach())
    embedding = minilm["model"].embeddings.word_embeddings.weight.detach()
    assert torch.equal(saved["embeddings.word_embeddings.weight"], embedding)
    config = json.loads((exports("fp8", "affine") / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    assert config["quantization_config"] == {
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 8,
                    "type": "float",
                    "symmetric": True,
                    "strategy": "channel",
                    "group_size": None,
                    "dynamic": False,
                    "observer": "minmax",
                },
                "input_activations": {
                    "num_bits": 8,
                    "type": "float",
                    "symmetric": True,
                    "strategy": "tensor",
                    "group_size": None,
                    "dynamic": False,
                    "observer": None,
                },
                "output_activations": None,
                "format": "float-quantized",
            }
        },
        "ignore": [],
    }


def test_export_folder_is_complete(minilm, exports) -> None:
    """The source's tokenizer and sentence-transformers files are copied, its weights are not."""
    folder = exports("fp8", "affine")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= names
    assert {"modules.json", "1_Pooling"} <= names and ".gitattributes" not in names
    assert len([p for p in folder.rglob("*.safetensors")]) == 1
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    source = transformers.AutoTokenizer.from_pretrained(minilm["folder"])
    text = sample_texts()[-1]
    assert tokenizer(text)["input_ids"] == source(text)["input_ids"]


def test_int8_symmetric_tensors(minilm, results, exports) -> None:
    """int8 weight = round(W / s), s = row absmax / 127.5; input_scale = amax / 127.5 exactly."""
    result = results["symmetric"]
    folder = exports("int8", "symmetric")
    saved = load_file(str(folder / "model.safetensors"))
    for name, linear in linears(minilm["model"]).items():
        w = linear.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True) / INT8_HALF_RANGE
        expected = torch.round((w / scale).clamp(-128, 127)).to(torch.int8)
        assert torch.equal(saved[f"{name}.weight"], expected), name
        assert torch.equal(saved[f"{name}.weight_scale"], scale), name
        amax = observed_amax(result, name)
        assert torch.equal(saved[f"{name}.input_scale"], amax / INT8_HALF_RANGE), name
        assert f"{name}.input_zero_point" not in saved
    group = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert group["format"] == "int-quantized"
    inputs = group["config_groups"]["group_0"]["input_activations"]
    assert inputs["type"] == "int" and inputs["symmetric"] is True


def test_int8_affine_zero_point_is_torch_ao_quint8_minus_128(minilm, results, exports) -> None:
    """An affine observer (the default MinMaxObserver, quint8): input_scale is its scale and
    input_zero_point its zero point - 128, int8."""
    result = results["affine"]
    folder = exports("int8", "affine")
    saved = load_file(str(folder / "model.safetensors"))
    for name in linears(minilm["model"]):
        scale, zero_point = result[f"{name}.input"].qparams()
        assert torch.equal(saved[f"{name}.input_scale"], scale), name
        assert saved[f"{name}.input_zero_point"].dtype == torch.int8
        assert torch.equal(saved[f"{name}.input_zero_point"], (zero_point - 128).to(torch.int8))
    group = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert group["config_groups"]["group_0"]["input_activations"]["symmetric"] is False


@needs_compressed_tensors
def test_w4a16_packing_matches_compressed_tensors(minilm, exports) -> None:
    """weight_packed is compressed-tensors' own pack_to_int32 of q = round(W / s).clamp(-8, 7),
    s = group-of-128 absmax / 7.5; value j of a row, plus 8, sits in bits 4 (j % 8) of word j // 8."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    folder = exports("w4a16", "affine")
    saved = load_file(str(folder / "model.safetensors"))
    for name, linear in linears(minilm["model"]).items():
        w = linear.weight.detach()
        out_features, in_features = w.shape
        groups = w.reshape(out_features, in_features // 128, 128)
        scale = groups.abs().amax(dim=-1) / INT4_HALF_RANGE
        q = torch.round((groups / scale.unsqueeze(-1)).clamp(-8, 7)).reshape(w.shape)
        q = q.to(torch.int8)
        packed = saved[f"{name}.weight_packed"]
        assert packed.dtype == torch.int32 and packed.shape == (out_features, in_features // 8)
        assert torch.equal(packed, pack_to_int32(q, 4)), name
        assert torch.equal(saved[f"{name}.weight_scale"], scale), name
        assert torch.equal(saved[f"{name}.weight_shape"], torch.tensor([out_features, in_features]))
        assert f"{name}.weight" not in saved and f"{name}.input_scale" not in saved
    nibbles = [((int(packed[0, 1]) >> (4 * k)) & 0xF) - 8 for k in range(8)]
    assert nibbles == q[0, 8:16].tolist()
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    group = config["config_groups"]["group_0"]
    assert config["format"] == group["format"] == "pack-quantized"
    assert group["input_activations"] is None
    assert group["weights"]["num_bits"] == 4 and group["weights"]["group_size"] == 128
    assert group["weights"]["strategy"] == "group"


def corrupted_copy(folder: Path, target: Path, suffix: str, factor: float) -> Path:
    shutil.copytree(folder, target)
    path = target / "model.safetensors"
    tensors = load_file(str(path))
    for name in tensors:
        if name.endswith(suffix):
            tensors[name] = tensors[name] * factor
    save_file(tensors, str(path), metadata={"format": "pt"})
    return target


@needs_compressed_tensors
def test_corrupted_scales_move_the_output(minilm, exports, tmp_path) -> None:
    """transformers uses the exported scales: input_scale x 0.001 (FP8) and weight_scale x 0.5
    (W4A16) in a copy of the folder drop the cosine with the float model (measured: 0.23, 0.44)."""
    fp8 = corrupted_copy(exports("fp8", "affine"), tmp_path / "fp8", ".input_scale", 1e-3)
    assert cosines(fp8, minilm).mean() < 0.4
    w4a16 = corrupted_copy(exports("w4a16", "affine"), tmp_path / "w4a16", ".weight_scale", 0.5)
    assert cosines(w4a16, minilm).mean() < 0.6


@needs_compressed_tensors
def test_causal_lm_keeps_lm_head_in_float(tiny_llama, llama_result, tmp_path) -> None:
    """A causal LM with tied embeddings: lm_head is ignored (float, tied to the embeddings as
    before), the rest is FP8, and AutoModelForCausalLM's logits stay close to the float ones."""
    model = tiny_llama["model"]
    folder = export_compressed_tensors(model, llama_result, tmp_path / "out", "fp8")
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["ignore"] == ["lm_head"]
    saved = load_file(str(folder / "model.safetensors"))
    assert "lm_head.weight" not in saved  # tied: stored once, as the embedding
    assert saved["model.layers.0.self_attn.q_proj.weight"].dtype == torch.float8_e4m3fn
    assert saved["model.embed_tokens.weight"].dtype == torch.float32
    assert (folder / "generation_config.json").is_file()
    quantized = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    batch = tiny_llama["batches"][0]
    with torch.inference_mode():
        expected, actual = model(**batch).logits, quantized(**batch).logits
    assert torch.equal(quantized.lm_head.weight, model.lm_head.weight)
    assert torch.cosine_similarity(actual.flatten(), expected.flatten(), dim=0) > 0.99


@needs_compressed_tensors
def test_w4a16_unfit_layers_go_to_ignore_with_one_warning(tiny_llama, tmp_path) -> None:
    """in_features 200 is not a multiple of 128: both down_proj layers stay in float, named in
    one warning and in ignore; the folder loads."""
    model = tiny_llama["model"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = export_compressed_tensors(model, None, tmp_path / "out", "w4a16")
    messages = [str(w.message) for w in caught if w.category is UserWarning]
    assert messages == [
        "w4a16 leaves 2 Linear layers in float (added to ignore): "
        "model.layers.0.mlp.down_proj (in_features 200 is not a multiple of 128); "
        "model.layers.1.mlp.down_proj (in_features 200 is not a multiple of 128)"
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["ignore"] == [
        "model.layers.0.mlp.down_proj",
        "model.layers.1.mlp.down_proj",
        "lm_head",
    ]
    saved = load_file(str(folder / "model.safetensors"))
    down = model.model.layers[0].mlp.down_proj.weight
    assert torch.equal(saved["model.layers.0.mlp.down_proj.weight"], down)
    assert "model.layers.0.mlp.up_proj.weight_packed" in saved
    transformers.AutoModelForCausalLM.from_pretrained(folder)


def test_ignore_names_and_regexes(tiny_llama, llama_result, tmp_path) -> None:
    model = tiny_llama["model"]
    ignore = ["re:.*self_attn\\.[qk]_proj", "model.layers.1.mlp.up_proj"]
    folder = export_compressed_tensors(model, llama_result, tmp_path / "a", "int8", ignore=ignore)
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["ignore"] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.k_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.k_proj",
        "model.layers.1.mlp.up_proj",
        "lm_head",
    ]
    saved = load_file(str(folder / "model.safetensors"))
    assert saved["model.layers.1.mlp.up_proj.weight"].dtype == torch.float32
    assert saved["model.layers.1.mlp.gate_proj.weight"].dtype == torch.int8
    with pytest.raises(ExportError, match="ignore entry 'model.nothing' matches no Linear"):
        export_compressed_tensors(
            model, llama_result, tmp_path / "b", "int8", ignore=["model.nothing"]
        )


def test_mse_weight_observer(tiny_llama, llama_result, tmp_path) -> None:
    """weight_observer='mse': the weight scales are llm-compressor's MSE search
    (tritonobs.weight_qparams), recorded in the config."""
    model = tiny_llama["model"]
    folder = export_compressed_tensors(
        model, llama_result, tmp_path / "out", "int8", weight_observer="mse"
    )
    saved = load_file(str(folder / "model.safetensors"))
    w = model.model.layers[1].mlp.down_proj.weight
    scale, _ = tritonobs.weight_qparams(w, observer="mse", num_bits=8)
    assert torch.equal(saved["model.layers.1.mlp.down_proj.weight_scale"], scale)
    assert not torch.equal(scale, w.detach().abs().amax(dim=1, keepdim=True) / INT8_HALF_RANGE)
    group = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert group["config_groups"]["group_0"]["weights"]["observer"] == "mse"


def test_calibration_result_export_is_the_function(tiny_llama, llama_result, tmp_path) -> None:
    """`CalibrationResult.export` writes what `export_compressed_tensors` writes."""
    by_method = llama_result.export(tiny_llama["model"], tmp_path / "method", "w4a16")
    by_function = export_compressed_tensors(
        tiny_llama["model"], llama_result, tmp_path / "function", "w4a16"
    )
    assert by_method == tmp_path / "method"
    expected = load_file(by_function / "model.safetensors")
    got = load_file(by_method / "model.safetensors")
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    config = json.loads((by_method / "config.json").read_text())
    assert config == json.loads((by_function / "config.json").read_text())


def test_histogram_observers_export_their_searched_range(tiny_llama, tmp_path) -> None:
    """torch.ao's HistogramObserver: int8 input qparams are its own L2-searched qparams (zero
    point - 128); AmaxHistogramObserver: the FP8 input_scale is its compute_amax() / 448."""
    model, batches = tiny_llama["model"], tiny_llama["batches"]
    histogram = calibrate(model, batches, observer=ao.HistogramObserver, progress=False)
    folder = export_compressed_tensors(model, histogram, tmp_path / "hist", "int8")
    saved = load_file(str(folder / "model.safetensors"))
    name = "model.layers.0.mlp.down_proj"
    scale, zero_point = histogram[f"{name}.input"].qparams()
    observer = histogram[f"{name}.input"].observer
    assert not torch.equal(scale, (observer.max_val - observer.min_val).reshape(1) / 255)
    assert torch.equal(saved[f"{name}.input_scale"], scale)
    assert torch.equal(saved[f"{name}.input_zero_point"], (zero_point - 128).to(torch.int8))

    amax_observer = tritonobs.AmaxHistogramObserver.with_args(method="percentile")
    amax = calibrate(model, batches, observer=amax_observer, progress=False)
    folder = export_compressed_tensors(model, amax, tmp_path / "amax", "fp8")
    saved = load_file(str(folder / "model.safetensors"))
    expected = amax[f"{name}.input"].observer.compute_amax().reshape(1) / FP8_MAX
    assert torch.equal(saved[f"{name}.input_scale"], expected)


def test_refuses_a_non_empty_directory_unless_overwrite(tiny_llama, llama_result, tmp_path):
    model, out = tiny_llama["model"], tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from before")
    with pytest.raises(ExportError, match="exists and is not empty; pass overwrite"):
        export_compressed_tensors(model, llama_result, out, "fp8")
    assert [p.name for p in out.iterdir()] == ["stale.txt"]
    export_compressed_tensors(model, llama_result, out, "fp8", overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left
    with pytest.raises(ExportError, match="is the source model folder"):
        export_compressed_tensors(model, llama_result, tiny_llama["folder"], "fp8", overwrite=True)


def test_bad_input_is_one_line(tiny_llama, llama_result, tmp_path) -> None:
    model = tiny_llama["model"]
    cases = [
        (nn.Sequential(nn.Linear(4, 4)), "fp8", {}, "Sequential is not a Hugging Face"),
        (model, "int4", {}, "unknown scheme 'int4'; choose one of fp8, int8, w4a16"),
        (model, "fp8", {"weight_observer": "l2"}, "unknown weight observer 'l2'"),
        (model, "fp8", {"source": tmp_path / "missing"}, "is not a folder"),
    ]
    for target, scheme, options, message in cases:
        with pytest.raises(ExportError, match=message) as raised:
            export_compressed_tensors(target, llama_result, tmp_path / "out", scheme, **options)
        assert "\n" not in str(raised.value) and isinstance(raised.value, ValueError)
    with pytest.raises(ExportError, match="needs the calibration result"):
        export_compressed_tensors(model, None, tmp_path / "out", "fp8")
    small = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2}
    built = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(vocab_size=8, num_hidden_layers=1, **small)
    )
    with pytest.raises(ExportError, match="not loaded from a local model folder; pass source"):
        export_compressed_tensors(built, llama_result, tmp_path / "out", "fp8")
    assert not (tmp_path / "out").exists()


def test_command_line_options(tiny_llama, llama_result, tmp_path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weight-observer", default="minmax")  # tritonobs calibrate's own
    add_export_arguments(parser)
    args = parser.parse_args([])
    check_export_args(args)
    assert export_from_args(args, tiny_llama["model"], llama_result, tiny_llama["folder"]) is None
    with pytest.raises(ExportError, match="--export fp8 needs --export-dir DIR"):
        check_export_args(parser.parse_args(["--export", "fp8"]))
    with pytest.raises(ExportError, match="--export-dir needs --export"):
        check_export_args(parser.parse_args(["--export-dir", str(tmp_path)]))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    full = ["--export", "fp8", "--export-dir", str(tmp_path / "full")]
    with pytest.raises(ExportError, match="is not empty; pass --overwrite"):
        check_export_args(parser.parse_args(full))
    check_export_args(parser.parse_args([*full, "--overwrite"]))
    out = tmp_path / "out"
    argv = ["--export", "int8", "--export-dir", str(out), "--weight-observer", "mse"]
    args = parser.parse_args([*argv, "--ignore", "re:.*mlp.*"])
    check_export_args(args)
    assert export_from_args(args, tiny_llama["model"], llama_result, tiny_llama["folder"]) == out
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["config_groups"]["group_0"]["weights"]["observer"] == "mse"
    assert len(config["ignore"]) == 7  # 2 layers x gate/up/down, and lm_head


@needs_compressed_tensors
def test_cli_exports_the_embedded_default(minilm, tmp_path, monkeypatch) -> None:
    """`tritonobs calibrate --export fp8 --export-dir DIR` (the default workload) on the embedded
    MiniLM: the folder loads in transformers close to the float model, and its input scales are
    the amax / 448 of the qparams file the same command wrote."""
    from tritonobs.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "fp8"
    assert main(["calibrate", "--quiet", "--export", "fp8", "--export-dir", str(out)]) == 0
    assert cosines(out, minilm).mean() >= 0.996
    saved = tritonobs.CalibrationResult.load(next(tmp_path.glob("*.safetensors")))
    tensors = load_file(out / "model.safetensors")
    for name in linears(minilm["model"]):
        assert torch.equal(tensors[f"{name}.input_scale"], observed_amax(saved, name) / 448), name
