"""The README's config tables are written from lmfast/config.py's key table
(scripts/readme_config_tables.py): every key is documented, and the docs match the code."""
import subprocess
import sys
from pathlib import Path

from lmfast.config import EMBEDDING_LOAD_KEYS, LOAD_KEYS, PREDICTION_KEYS

ROOT = Path(__file__).resolve().parents[1]


def test_readme_config_tables_match_the_key_table():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_config_tables.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr + " (run: python scripts/readme_config_tables.py)"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for key in PREDICTION_KEYS + LOAD_KEYS + EMBEDDING_LOAD_KEYS:
        assert f"| `{key.name}` | `{key.snake_name}` |" in readme, key.name
    for name in ("offloadKVCacheToGpu", "ignoreEos"):  # the ones the hand-written tables had left out
        assert f"| `{name}` |" in readme


def test_a_stale_readme_is_caught(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import readme_config_tables as gen
    finally:
        sys.path.pop(0)
    current = (ROOT / "README.md").read_text(encoding="utf-8")
    stale = current.replace("| `ignoreEos` |", "| `ignoreEOS` |")
    assert stale != current and gen.render(stale) == current


def test_typo_suggestions_name_each_key_once():
    import lmfast as lms

    try:
        lms.config.prediction_config({"temprature": 0})
    except lms.LMStudioInvalidConfigError as e:
        message = str(e)
    else:
        raise AssertionError("a misspelt key was accepted")
    hint = message[message.index("did you mean"):message.index("?")]
    assert hint.count("'temperature'") == 1, message
    names = [w.strip(" '") for w in hint[len("did you mean"):].split(",")]
    assert len(names) == len(set(names)), message
