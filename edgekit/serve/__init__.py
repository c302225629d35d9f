"""`edgekit serve`: online prediction over the Open Inference Protocol (KServe v2), REST and gRPC.

protocol.py  v2 JSON <-> numpy, validated against the model's metadata
batching.py  dynamic micro-batching of concurrent requests
metrics.py   Prometheus metrics
engine.py    the served models, their micro-batchers and metrics, shared by REST and gRPC
app.py       the Starlette application: routes, body/JSON/image limits
ui.py        the web page at / (static/: index.html, app.js, style.css)
grpc/        GRPCInferenceService on grpc.aio in the same event loop (--grpc-port), committed stubs
guard.py     in front of it: client address (trusted proxies), allow-list, API key, body deadline, metrics
connection.py  uvicorn's protocol with a deadline and a size cap on request heads (slowloris)
Needs the `serve` extra: pip install 'edgekit[serve]'.
"""
