"""timbreclip.export: ONNX / TensorRT exports of the TimbreCLIP towers and the runtime backends built on them."""
