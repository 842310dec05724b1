"""test_hub_interop.py -- one cache for shardlm and huggingface_hub (the
real client, from PyPI): a cache huggingface_hub.snapshot_download filled
from the mock hub is used by shardlm offline without a request, and a cache
shardlm filled is found by huggingface_hub offline, file for file.
Usage: test_hub_interop.py HUB_CLI   (exit 77 without huggingface_hub)"""

import atexit
import os
import shutil
import sys
import tempfile

from hubtest import new_cache, run_cli, run_tests
from mock_hub import MockHub

# Keep huggingface_hub away from the real hub and the user's files before it is imported.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="sl_hf_home_")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], True)
for k in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
    os.environ.pop(k, None)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
try:
    import huggingface_hub
    from huggingface_hub import snapshot_download, try_to_load_from_cache
except ImportError as e:
    print("SKIP: huggingface_hub is not installed in this python (%s); run tools/venv.sh" % e)
    sys.exit(77)

CLI = sys.argv[1]
HUB = None
WANTED = {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json",
          "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}


def test_version_pinned():
    assert huggingface_hub.__version__ == "2.4.0", huggingface_hub.__version__


def test_shardlm_uses_cache_filled_by_huggingface_hub():
    cache = new_cache()
    hf_dir = snapshot_download("org/tiny", cache_dir=cache, endpoint=HUB.url)
    assert os.path.isfile(os.path.join(hf_dir, "pytorch_model.bin"))  # huggingface_hub takes everything
    n = len(HUB.log)
    rc, out, err = run_cli(CLI, "org/tiny", cache, "http://127.0.0.1:9", env={"HF_HUB_OFFLINE": "1"})
    assert rc == 0, err
    assert out == hf_dir and len(HUB.log) == n
    # Online as well: a complete snapshot is used without asking the hub.
    rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url)
    assert rc == 0 and out == hf_dir and len(HUB.log) == n, err
    shutil.rmtree(cache)


def test_partial_huggingface_hub_snapshot_is_not_complete():
    """huggingface_hub caches the commit's file listing (trees/<commit>.json):
    shardlm reads it to see that a snapshot lacks the shards."""
    cache = new_cache()
    snapshot_download("org/tiny", cache_dir=cache, endpoint=HUB.url, allow_patterns=["*.json"])
    rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url, env={"HF_HUB_OFFLINE": "1"})
    assert rc == 2 and "incomplete" in err and "safetensors" in err, err
    # Online, shardlm completes it, reusing the blobs huggingface_hub fetched.
    n = len(HUB.log)
    rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url)
    assert rc == 0, err
    fetched = {p.split("/resolve/")[1].split("/", 1)[1] for m, p, h in HUB.log[n:] if m == "HEAD"}
    assert fetched == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}, fetched
    shutil.rmtree(cache)


def test_huggingface_hub_finds_cache_filled_by_shardlm():
    cache = new_cache()
    rc, snap, err = run_cli(CLI, "org/tiny", cache, HUB.url)
    assert rc == 0, err
    for name in WANTED:
        found = try_to_load_from_cache("org/tiny", name, cache_dir=cache)
        assert found == os.path.join(snap, name), (name, found)
        with open(found, "rb") as f:
            assert f.read() == HUB.repos["org/tiny"].files[name]
    assert try_to_load_from_cache("org/tiny", "pytorch_model.bin", cache_dir=cache) is None
    # The files shardlm recorded as absent are known absent to huggingface_hub too.
    assert try_to_load_from_cache("org/tiny", "generation_config.json", cache_dir=cache) \
        is huggingface_hub.file_download._CACHED_NO_EXIST
    n = len(HUB.log)
    hf_dir = snapshot_download("org/tiny", cache_dir=cache, local_files_only=True)
    assert hf_dir == snap and len(HUB.log) == n
    assert sorted(os.listdir(hf_dir)) == sorted(WANTED)
    # And huggingface_hub online reuses shardlm's blobs: only the files shardlm skipped are fetched.
    snapshot_download("org/tiny", cache_dir=cache, endpoint=HUB.url)
    cdn = {p for m, p, h in HUB.log[n:] if m == "GET" and p.startswith("/cdn/")}
    assert len(cdn) == 3, cdn  # pytorch_model.bin, consolidated.safetensors, onnx/model.onnx
    shutil.rmtree(cache)


if __name__ == "__main__":
    with MockHub() as HUB:
        run_tests(dict(globals()))
