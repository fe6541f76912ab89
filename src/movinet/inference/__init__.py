"""Using trained models: video input, prediction and streaming sessions, the temporal ensemble,
ONNX export of the stream step, live sources and the HTTP server."""
