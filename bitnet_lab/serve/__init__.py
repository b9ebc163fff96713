"""`bitnet-lab serve`: one loaded model behind an OpenAI-compatible HTTP API.

``schemas`` (the request and response bodies, OpenAI's field names, pydantic), ``engine`` (one
scheduler thread that owns a `bitnet_lab.generate.batch.BatchGenerator` and steps it: continuous
batching; requests enter through a bounded queue), ``app`` (the FastAPI routes, server-sent
events, the API key, the OpenAI error objects, the body-size limit), ``metrics`` (Prometheus
text). FastAPI and uvicorn are imported here only: ``import bitnet_lab`` stays light.
"""

from __future__ import annotations
