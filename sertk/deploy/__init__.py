"""Deployment: self-contained model packages, batch inference on audio files, TorchScript/ONNX export."""
