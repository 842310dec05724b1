"""test_hub_mock.py -- shardlm's hub downloads against mock_hub.py: a fresh
download lands in the huggingface_hub cache layout with verified blobs and
only the files a model needs; the second start makes no request; a cut
connection resumes with Range; a corrupt blob is caught; gated, unknown and
offline cases say what to do.  Usage: test_hub_mock.py HUB_CLI"""

import hashlib
import os
import shutil
import subprocess
import sys

from hubtest import new_cache, run_cli, run_tests
from mock_hub import GOOD_TOKEN, NO_ACCESS_TOKEN, MockHub

CLI = sys.argv[1]
HUB = None
WANTED = {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json",
          "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def fixture(path, repo="org/tiny"):
    return HUB.repos[repo].files[path]


def check_snapshot(cache, repo="org/tiny"):
    """The snapshot holds exactly the wanted files as relative links to verified blobs."""
    r = HUB.repos[repo]
    storage = os.path.join(cache, "models--" + repo.replace("/", "--"))
    snap = os.path.join(storage, "snapshots", r.commit)
    assert sorted(os.listdir(snap)) == sorted(WANTED), os.listdir(snap)
    for name in WANTED:
        link = os.readlink(os.path.join(snap, name))
        entry = r.entry(name)
        etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
        assert link == "../../blobs/" + etag, (name, link)
        with open(os.path.join(snap, name), "rb") as f:
            assert f.read() == fixture(name, repo), name
    with open(os.path.join(storage, "refs", "main")) as f:
        assert f.read() == r.commit
    assert not [b for b in os.listdir(os.path.join(storage, "blobs")) if b.endswith(".incomplete")]
    return snap


def test_download_then_cache_only():
    cache = new_cache()
    rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url)
    assert rc == 0, err
    snap = check_snapshot(cache)
    assert out == snap
    # Only the wanted files were fetched: never the .bin, the unindexed consolidated copy, README or onnx/.
    fetched = {p.split("/resolve/")[1].split("/", 1)[1] for m, p, h in HUB.requests("HEAD", "/resolve/")}
    assert fetched == WANTED, fetched
    assert len(HUB.requests("GET", "/cdn/")) == 2
    assert len(HUB.requests("GET", "/api/models/org/tiny/tree/")) == 3  # 11 files and a folder, pages of 4
    # The second start: the cache alone, not one request.
    before = len(HUB.log)
    rc, out2, err = run_cli(CLI, "org/tiny", cache, HUB.url)
    assert rc == 0 and out2 == snap, err
    assert len(HUB.log) == before, HUB.log[before:]
    # A tag and the commit itself resolve too (the tag once online, then from refs/v1).
    rc, out3, err = run_cli(CLI, "org/tiny@v1", cache, HUB.url)
    assert rc == 0 and out3 == snap, err
    assert not HUB.requests("GET", "/cdn/")[2:], "blobs were fetched twice"
    before = len(HUB.log)
    rc, out4, err = run_cli(CLI, "org/tiny", cache, HUB.url, args=("--revision", HUB.repos["org/tiny"].commit))
    assert rc == 0 and out4 == snap and len(HUB.log) == before, err
    shutil.rmtree(cache)


def test_resume_after_cut_connection():
    cache = new_cache()
    sha = sha256(fixture(SHARD1))
    HUB.cut_once.add(sha)
    n = len(HUB.log)
    rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url)
    assert rc == 0, err
    check_snapshot(cache)
    gets = [h for m, p, h in HUB.log[n:] if m == "GET" and p.startswith("/cdn/" + sha)]
    assert len(gets) == 2, gets
    assert "Range" not in gets[0] and gets[1]["Range"] == "bytes=%d-" % (len(fixture(SHARD1)) // 2), gets
    shutil.rmtree(cache)


def test_resume_partial_blob_from_earlier_run():
    cache = new_cache()
    data = fixture(SHARD2)
    sha = sha256(data)
    blobs = os.path.join(cache, "models--org--tiny", "blobs")
    os.makedirs(blobs)
    with open(os.path.join(blobs, sha + ".incomplete"), "wb") as f:
        f.write(data[:12345])
    n = len(HUB.log)
    rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url)
    assert rc == 0, err
    check_snapshot(cache)
    gets = [h for m, p, h in HUB.log[n:] if m == "GET" and p.startswith("/cdn/" + sha)]
    assert [g.get("Range") for g in gets] == ["bytes=12345-"], gets
    with open(os.path.join(blobs, sha), "rb") as f:
        assert sha256(f.read()) == sha
    shutil.rmtree(cache)


def test_corrupt_blob_is_detected():
    cache = new_cache()
    sha = sha256(fixture(SHARD2))
    HUB.corrupt.add(sha)
    try:
        rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url)
    finally:
        HUB.corrupt.discard(sha)
    assert rc == 2 and out == "", (rc, out)
    assert "org/tiny/%s: downloaded bytes do not match the hub's sha256 (expected %s" % (SHARD2, sha) in err, err
    blobs = os.listdir(os.path.join(cache, "models--org--tiny", "blobs"))
    assert sha not in blobs and sha + ".incomplete" not in blobs, blobs
    # Offline, the half-finished snapshot is not taken for a model (the failure
    # also cancels the other shard's download, so either may be named).
    rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url, env={"HF_HUB_OFFLINE": "1"})
    assert rc == 2 and "incomplete" in err and ".safetensors is missing" in err, err
    # Run again: fetched anew and complete.
    rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url)
    assert rc == 0, err
    check_snapshot(cache)
    shutil.rmtree(cache)


def test_gated_repo():
    cache = new_cache()
    rc, out, err = run_cli(CLI, "org/gated", cache, HUB.url)
    assert rc == 2, err
    assert ("model org/gated is gated: set HF_TOKEN to a token whose account accepted its licence at %s/org/gated"
            % HUB.url) in err, err
    rc, out, err = run_cli(CLI, "org/gated", cache, HUB.url, env={"HF_TOKEN": NO_ACCESS_TOKEN})
    assert rc == 2 and "is gated and the token in HF_TOKEN has no access" in err, err
    n = len(HUB.log)
    rc, out, err = run_cli(CLI, "org/gated", cache, HUB.url, env={"HF_TOKEN": GOOD_TOKEN})
    assert rc == 0, err
    check_snapshot(cache, "org/gated")
    # The token goes to the hub, never to the CDN it redirects to.
    for m, p, h in HUB.log[n:]:
        has_auth = h.get("Authorization") == "Bearer " + GOOD_TOKEN
        assert has_auth == (not p.startswith("/cdn/")), (m, p, h.get("Authorization"))
    shutil.rmtree(cache)


def test_token_file():
    cache = new_cache()
    home = os.path.join(cache, "home")
    os.makedirs(home)
    with open(os.path.join(home, "token"), "w") as f:
        f.write(GOOD_TOKEN + "\n")
    rc, out, err = run_cli(CLI, "org/gated", cache, HUB.url)
    assert rc == 0, err
    shutil.rmtree(cache)


def test_unknown_repo_and_revision():
    cache = new_cache()
    rc, out, err = run_cli(CLI, "org/nope", cache, HUB.url)
    assert rc == 2 and ("model org/nope not found on %s, or private/gated: check the id, or set HF_TOKEN" % HUB.url) in err, err
    rc, out, err = run_cli(CLI, "org/nope", cache, HUB.url, env={"HF_TOKEN": GOOD_TOKEN})
    assert rc == 2 and "model org/nope not found on %s, or the token in HF_TOKEN has no access" % HUB.url in err, err
    rc, out, err = run_cli(CLI, "org/tiny@nope", cache, HUB.url)
    assert rc == 2 and "revision 'nope' of model org/tiny not found on" in err, err
    shutil.rmtree(cache)


def test_renamed_repo_redirects():
    cache = new_cache()
    rc, out, err = run_cli(CLI, "org/renamed", cache, HUB.url)
    assert rc == 0, err
    assert sorted(os.listdir(out)) == sorted(WANTED)
    assert out.endswith("models--org--renamed/snapshots/" + HUB.repos["org/tiny"].commit)
    shutil.rmtree(cache)


def test_offline():
    cache = new_cache()
    n = len(HUB.log)
    rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url, env={"HF_HUB_OFFLINE": "1"})
    assert rc == 2 and "HF_HUB_OFFLINE is set and model org/tiny (revision main) is not in the cache" in err, err
    assert len(HUB.log) == n
    rc, out, err = run_cli(CLI, "org/tiny", cache, HUB.url)
    assert rc == 0, err
    n = len(HUB.log)
    rc, out2, err = run_cli(CLI, "org/tiny", cache, HUB.url, env={"HF_HUB_OFFLINE": "1"})
    assert rc == 0 and out2 == out and len(HUB.log) == n, err
    shutil.rmtree(cache)


def test_no_network():
    cache = new_cache()
    rc, out, err = run_cli(CLI, "org/tiny", cache, "http://127.0.0.1:9")
    assert rc == 2 and "cannot reach the hub at http://127.0.0.1:9" in err and "HF_HUB_OFFLINE=1" in err, err
    shutil.rmtree(cache)


def test_concurrent_processes_download_once():
    cache = new_cache()
    HUB.delay = 0.02
    n = len(HUB.log)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update({"HF_HUB_CACHE": cache, "HF_ENDPOINT": HUB.url})
    try:
        procs = [subprocess.Popen([CLI, "org/tiny"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    finally:
        HUB.delay = 0.0
    assert all(rc == 0 for _, _, rc in results), results
    assert len({out for out, _, _ in results}) == 1
    gets = [p for m, p, h in HUB.log[n:] if m == "GET" and p.startswith("/cdn/")]
    assert len(gets) == 2, gets  # each shard downloaded by one process only
    check_snapshot(cache)
    shutil.rmtree(cache)


if __name__ == "__main__":
    with MockHub() as HUB:
        run_tests(dict(globals()))
