"""The command line: the README's main job, and the config listing."""
import subprocess
import sys

from lmfast.config import LOAD_KEYS, PREDICTION_KEYS


def lmfast_cli(*args):
    return subprocess.run([sys.executable, "-m", "lmfast", *args], capture_output=True, text=True, timeout=300)


def test_chat_answers_on_the_default_model(smollm2_path):
    res = lmfast_cli("chat", "What is the capital of France?", "--temperature", "0", "--max-tokens", "24")
    assert res.returncode == 0, res.stderr
    assert "paris" in res.stdout.lower()


def test_config_lists_every_key():
    res = lmfast_cli("config")
    assert res.returncode == 0, res.stderr
    for key in LOAD_KEYS + PREDICTION_KEYS:
        assert f"| `{key.name}` | `{key.snake_name}` |" in res.stdout


def test_models_lists_the_default_model(smollm2_path):
    res = lmfast_cli("models")
    assert res.returncode == 0, res.stderr
    assert "smollm2-135m-instruct" in res.stdout and str(smollm2_path) in res.stdout
