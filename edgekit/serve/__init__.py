"""`edgekit serve`: online prediction over the Open Inference Protocol (KServe v2) REST API.

protocol.py  v2 JSON <-> numpy, validated against the model's metadata
batching.py  dynamic micro-batching of concurrent requests
metrics.py   Prometheus metrics
app.py       the Starlette application: routes, auth, allow-list, body limit
Needs the `serve` extra: pip install 'edgekit[serve]'.
"""
