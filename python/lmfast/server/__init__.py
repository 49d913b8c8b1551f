"""lmfast's HTTP server: OpenAI's /v1 and LM Studio's /api/v0 on the in-process engine.

Needs the ``server`` extra (``pip install 'lmfast[server]'``); ``import lmfast`` does not import
this package. Run it with ``python -m lmfast serve``, or build the ASGI app yourself::

    from lmfast.server.app import create_app
    from lmfast.server.settings import ServerSettings
    app = create_app(ServerSettings(models=["smollm2-135m-instruct"]))
"""
