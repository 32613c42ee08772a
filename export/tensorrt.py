"""TensorRT backend: engines built from the ONNX export with TensorRT's Python API, cached beside the export.

Untested in CI (TensorRT cannot be installed on the CI machines and they have no GPU); written against TensorRT 10's
documented API (Builder / OnnxParser / optimisation profiles / execute_async_v3), with torch CUDA tensors as I/O
buffers. Tests skip with the exact reason unless ``import tensorrt`` works and CUDA is available.
"""

from __future__ import annotations

import numpy as np
import torch

from timbreclip.neural.frontend import FrontEnd
from timbreclip.neural.model import TimbreCLIP
from timbreclip.neural.text import check_prompts

from .base import WindowEmbedder, ensure_export
from .onnx_export import ExportError

MAX_BATCH, MAX_TOKENS = 64, 128


def build_engine(onnx_path, engine_path, shapes: dict[str, tuple[tuple, tuple, tuple]], fp16: bool) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(open(onnx_path, "rb").read()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT could not parse it ({errors})")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT engine build failed")
    data = bytes(serialized)
    with open(engine_path, "wb") as f:
        f.write(data)
    return data


class _Engine:
    def __init__(self, data: bytes) -> None:
        import tensorrt as trt

        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(data)
        self.context = self.engine.create_execution_context()

    def run(self, inputs: dict[str, torch.Tensor], out_shape: tuple[int, ...]) -> np.ndarray:
        stream = torch.cuda.current_stream()
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        out = torch.empty(out_shape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address("embedding", out.data_ptr())
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out.cpu().numpy()


class TensorRTEmbedder(WindowEmbedder):
    """The embedder interface on TensorRT engines (fp16 optional)."""

    def __init__(self, model: TimbreCLIP, fp16: bool = False) -> None:
        folder, _ = ensure_export(model)
        fe = model.config.frontend
        suffix = "fp16" if fp16 else "fp32"
        shapes_audio = {"features": ((1, 1, fe.n_features, fe.n_frames()), (8, 1, fe.n_features, fe.n_frames()),
                                     (MAX_BATCH, 1, fe.n_features, fe.n_frames()))}
        shapes_text = {k: ((1, 1), (8, 16), (MAX_BATCH, MAX_TOKENS)) for k in ("input_ids", "attention_mask")}
        engines = {}
        for name, shapes in (("audio", shapes_audio), ("text", shapes_text)):
            path = folder / f"{name}.{suffix}.engine"
            data = path.read_bytes() if path.is_file() else build_engine(folder / f"{name}.onnx", path, shapes, fp16)
            engines[name] = _Engine(data)
        self.audio, self.text = engines["audio"], engines["text"]
        self.frontend = FrontEnd(fe).eval()
        self.config = model.config
        self.tokenize = model.text.frozen.tokenize
        self.name = f"tensorrt-{suffix}"
        self.max_batch = MAX_BATCH
        self._dim = model.dim

    @property
    def dim(self) -> int:
        return self._dim

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            features = self.frontend(torch.from_numpy(np.ascontiguousarray(windows, np.float32))).cuda().contiguous()
        return self.audio.run({"features": features}, (features.shape[0], self._dim))

    def embed_text(self, texts, template: str | None = None) -> np.ndarray:
        tokens = self.tokenize(check_prompts(texts, template))
        ids = tokens["input_ids"].to(torch.int64).cuda().contiguous()
        mask = tokens.get("attention_mask", torch.ones_like(tokens["input_ids"])).to(torch.int64).cuda().contiguous()
        return self.text.run({"input_ids": ids, "attention_mask": mask}, (ids.shape[0], self._dim))
