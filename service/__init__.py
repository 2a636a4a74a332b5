"""The inference service: ONNX image classifiers over HTTP with dynamic batching (see app.py)."""
