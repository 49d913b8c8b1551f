"""lmfast on Ray Serve: replicas of lmfast's HTTP server app behind one endpoint, with requests
routed to the replica that holds their conversation's cache (docs/scaling.md).

Needs the ``ray`` extra (``pip install 'lmfast[ray]'``)::

    serve run lmfast.ray_serve:app model=/path/to/model.gguf num_replicas=2

or from Python: ``serve.run(lmfast.ray_serve.build_app({"model": PATH, "num_replicas": 2}))``.
"""
from .builder import ServeArgs, app, build_app

__all__ = ["ServeArgs", "app", "build_app"]
