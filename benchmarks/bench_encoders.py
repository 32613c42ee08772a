"""Encoder benchmark: audio encoder configs and text encoders, torch eager vs onnxruntime, in one run.

Prints batch-1 latency (ms per 4 s clip, median of many) and batch-32 throughput (clips/s) for the audio encoder
configs (cpu: width 32 on 64 mels; paper: Wav2CLIP width 64 on a linear STFT), and prompts per second plus batch-1
latency for the text tower, with the onnxruntime / eager ratios. Weights are random (speed does not depend on them).

    python benchmarks/bench_encoders.py [--json] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from timbreclip.export.backends import OnnxRuntimeEmbedder
from timbreclip.export.onnx_export import export_onnx
from timbreclip.neural.encoder import AudioEncoderConfig
from timbreclip.neural.frontend import FrontEndConfig
from timbreclip.neural.model import ModelConfig, TimbreCLIP
from timbreclip.neural.text import MiniLMEncoder


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch and onnxruntime intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    minilm = MiniLMEncoder()
    configs = {
        "cpu (width 32, 64 mels)": ModelConfig(),
        "paper (width 64, linear STFT)": ModelConfig(FrontEndConfig.wav2clip(), AudioEncoderConfig(width=64)),
    }
    report: dict = {"audio": {}, "text": {}}
    rng = np.random.default_rng(0)
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = TimbreCLIP(cfg, text_encoder=minilm).eval()
        params = sum(p.numel() for p in model.audio.parameters())
        with tempfile.TemporaryDirectory() as tmp:
            model.save(tmp)
            model = TimbreCLIP.load(tmp, text_encoder=minilm)
            export_onnx(model, f"{tmp}/onnx", waveform_graph=False)
            ort = OnnxRuntimeEmbedder(model, folder=__import__("pathlib").Path(f"{tmp}/onnx"))
            fe = cfg.frontend
            f1 = torch.randn(1, 1, fe.n_features, fe.n_frames())
            f32 = torch.randn(32, 1, fe.n_features, fe.n_frames())
            with torch.no_grad():
                eager1 = median_ms(lambda: model.audio(f1), 50)
                eager32 = median_ms(lambda: model.audio(f32), 5)
            ort1 = median_ms(lambda: ort.embed_features(f1.numpy()), 50)
            ort32 = median_ms(lambda: ort.embed_features(f32.numpy()), 5)
            clip = rng.standard_normal(fe.window_samples).astype(np.float32) * 0.1
            end_to_end = median_ms(lambda: model.embed_audio(clip, fe.sample_rate), 30)
            report["audio"][name] = {
                "parameters": params,
                "torch_batch1_ms": round(eager1, 2), "onnxruntime_batch1_ms": round(ort1, 2),
                "torch_batch32_clips_per_s": round(32000 / eager32, 1),
                "onnxruntime_batch32_clips_per_s": round(32000 / ort32, 1),
                "onnxruntime_vs_torch_batch1": round(eager1 / ort1, 2),
                "onnxruntime_vs_torch_batch32": round(eager32 / ort32, 2),
                "torch_embed_audio_end_to_end_ms": round(end_to_end, 2),
            }
        if name.startswith("cpu"):
            prompts = [f"{w} {c}" for w in ("warm", "bright", "dark", "airy") for c in ("pad", "lead", "bass", "bell",
                                                                                        "organ", "piano", "pluck", "string")]
            model.text._cache.clear()
            toks1 = minilm.tokenize(["warm analog pad"])
            toks32 = minilm.tokenize(prompts)
            with torch.no_grad():
                t_eager1 = median_ms(lambda: model.text.project(minilm(**toks1)), 30)
                t_eager32 = median_ms(lambda: model.text.project(minilm(**toks32)), 10)
            t_ort1 = median_ms(lambda: ort.text.run(["embedding"], {k: v.numpy() for k, v in toks1.items()}), 30)
            t_ort32 = median_ms(lambda: ort.text.run(["embedding"], {k: v.numpy() for k, v in toks32.items()}), 10)
            report["text"]["minilm"] = {
                "torch_batch1_ms": round(t_eager1, 2), "onnxruntime_batch1_ms": round(t_ort1, 2),
                "torch_prompts_per_s": round(32000 / t_eager32, 1),
                "onnxruntime_prompts_per_s": round(32000 / t_ort32, 1),
                "onnxruntime_vs_torch_batch1": round(t_eager1 / t_ort1, 2),
            }
    report["threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"torch threads: {report['threads']}")
    for name, r in report["audio"].items():
        print(f"audio {name}: {r['parameters'] / 1e6:.2f}M params")
        print(f"  batch 1 : torch {r['torch_batch1_ms']:7.2f} ms   onnxruntime {r['onnxruntime_batch1_ms']:7.2f} ms"
              f"   ratio {r['onnxruntime_vs_torch_batch1']:.2f}x")
        print(f"  batch 32: torch {r['torch_batch32_clips_per_s']:7.1f} clips/s onnxruntime "
              f"{r['onnxruntime_batch32_clips_per_s']:7.1f} clips/s ratio {r['onnxruntime_vs_torch_batch32']:.2f}x")
        print(f"  embed_audio (4 s clip, front end included, torch): {r['torch_embed_audio_end_to_end_ms']:.2f} ms")
    for name, r in report["text"].items():
        print(f"text {name}: batch 1 torch {r['torch_batch1_ms']:.2f} ms, onnxruntime {r['onnxruntime_batch1_ms']:.2f} ms "
              f"(ratio {r['onnxruntime_vs_torch_batch1']:.2f}x); {r['torch_prompts_per_s']:.0f} vs "
              f"{r['onnxruntime_prompts_per_s']:.0f} prompts/s")


if __name__ == "__main__":
    main()
