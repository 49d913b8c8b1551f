"""Model files, never inference: what a model key names (registry), downloads from the Hugging
Face Hub (hub) and their listing for client.repository (repository), the download listing
(downloaded), GGUF metadata without loading a model (gguf), BERT folders converted to GGUF
(convert_bert).

    _keys.py           ModelFile and the model key of a file name
    _paths.py          the cache and models folders, a file's sha256
    _gguf_summary.py   ls's columns from a GGUF file (file type, parameters from tensor shapes)

Nothing is imported here: ``import lmfast`` takes the names it exports from the modules.
"""
