"""The command line: ``lmfast`` / ``python -m lmfast`` (see ``_main`` for the verbs).

    _main.py      argument parsing and dispatch; chat, models, fetch, config, version
    _models.py    get, ls, import, rm (the models folder)
    _remote.py    ps, load, unload against a running server
    _serve.py     serve, server start|stop|status; _daemon.py: the background server's record
    _common.py    every verb's exit codes and error lines; _progress.py: the load progress bar

Only ``main`` is public; the modules are the command line's internals.
"""
from ._main import main

__all__ = ["main"]
