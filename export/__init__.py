"""PyTorch -> ONNX export and the model repository the service serves from."""
