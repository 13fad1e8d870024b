"""Using a trained net: predict, export (ONNX, TorchScript trace), BatchNorm folding."""
