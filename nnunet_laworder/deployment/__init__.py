"""Deployment outside PyTorch: a trained model exported to ONNX, and nnU-Net's prediction with onnxruntime."""
