"""`localllm serve`: an OpenAI- and Ollama-compatible HTTP server over the planner and the
batch engine.

    pip install 'localllm[server]'
    localllm serve smollm2-135m-instruct --port 8000

`create_app` (localllm/server/app.py) builds the FastAPI app over a `ModelPool`
(localllm/server/pool.py): models load when a request names them and fit, and unload when
idle. FastAPI and uvicorn are imported only here, never by `import localllm`.
"""

from __future__ import annotations

from localllm.server.pool import ModelPool, PoolConfig

__all__ = ["ModelPool", "PoolConfig"]
