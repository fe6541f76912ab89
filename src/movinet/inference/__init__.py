"""Using trained models: ONNX export of the stream step (and, later, prediction and serving)."""
