"""onnxruntime plumbing: tuned sessions, offline graph rewrites, export to int8 ONNX."""
