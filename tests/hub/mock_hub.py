"""mock_hub.py -- a small stand-in for the Hugging Face hub's HTTP API on loopback.

Serves fixture repositories with the response shapes of huggingface.co, as
huggingface_hub 2.4 reads them:

  GET  /api/models/{id}/revision/{rev}     model info: "sha", "siblings", "gated"...
  GET  /api/models/{id}/tree/{rev}?recursive=true   files with oid/size/lfs,
       paginated with a Link: <...>; rel="next" header
  HEAD/GET /{id}/resolve/{rev}/{path}      X-Repo-Commit, ETag (git blob sha1);
       LFS files answer 302 to a CDN URL on another origin (localhost vs
       127.0.0.1) with X-Linked-Etag (sha256) and X-Linked-Size
  GET  /cdn/{sha256}                       the LFS bytes, with Range (206)

Errors carry X-Error-Code as the hub sends them: an unknown repository is 401
RepoNotFound without a token (404 with one), a gated repository 401 GatedRepo
without a token (403 with a token lacking access), an unknown revision 404
RevisionNotFound, an unknown file 404 EntryNotFound.

org/renamed answers 307 to org/tiny, as the hub does for a renamed repository.

Knobs for tests: `cut_once` (sha256s whose next CDN answer stops halfway and
drops the connection), `corrupt` (sha256s served with flipped bytes), `delay`
(seconds to sleep per 64 KiB chunk), and `log`, every request received as
(method, path, headers dict). Run directly to serve the fixtures by hand.
"""

import hashlib
import json
import os
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD_TOKEN = "hf_good_token"
NO_ACCESS_TOKEN = "hf_no_access_token"
TREE_PAGE = 4


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data):
    return ("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n"
            % (hashlib.sha256(data).hexdigest(), len(data))).encode()


class Repo:
    """files: path -> bytes; lfs: which paths are stored with LFS."""

    def __init__(self, repo_id, files, lfs, gated=False, revisions=("main",)):
        self.repo_id = repo_id
        self.files = files
        self.lfs = set(lfs)
        self.gated = gated
        self.commit = hashlib.sha1(repo_id.encode() + b"-commit").hexdigest()
        self.revisions = set(revisions) | {self.commit}

    def entry(self, path):
        data = self.files[path]
        if path in self.lfs:
            pointer = lfs_pointer(data)
            return {"type": "file", "oid": git_blob_sha1(pointer), "size": len(data), "path": path,
                    "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                            "pointerSize": len(pointer)}}
        return {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}


def fixture_files(seed=0):
    """A small model: two safetensors shards (random bytes), an index naming
    them, a consolidated copy the index does not name, and a .bin that must
    never be fetched."""
    rnd = __import__("random").Random(seed)
    shard1 = bytes(rnd.getrandbits(8) for _ in range(300_000))
    shard2 = bytes(rnd.getrandbits(8) for _ in range(200_000))
    index = {"metadata": {"total_size": len(shard1) + len(shard2)},
             "weight_map": {"model.embed.weight": "model-00001-of-00002.safetensors",
                            "model.layers.0.weight": "model-00001-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    files = {
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": b"# tiny\n",
        "config.json": json.dumps({"model_type": "llama", "hidden_size": 64}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE"}}).encode(),
        "tokenizer_config.json": json.dumps({"bos_token": "<s>"}).encode(),
        "model.safetensors.index.json": json.dumps(index).encode(),
        "model-00001-of-00002.safetensors": shard1,
        "model-00002-of-00002.safetensors": shard2,
        "consolidated.safetensors": shard1 + shard2,
        "pytorch_model.bin": bytes(rnd.getrandbits(8) for _ in range(50_000)),
        "onnx/model.onnx": b"onnx",
    }
    lfs = [p for p in files if p.endswith((".safetensors", ".bin", ".onnx"))]
    return files, lfs


class MockHub:
    def __init__(self):
        files, lfs = fixture_files()
        self.repos = {
            "org/tiny": Repo("org/tiny", files, lfs, revisions=("main", "v1")),
            "org/gated": Repo("org/gated", files, lfs, gated=True),
        }
        self.by_sha256 = {hashlib.sha256(d).hexdigest(): d for r in self.repos.values() for d in r.files.values()}
        self.cut_once = set()
        self.corrupt = set()
        self.delay = 0.0
        self.log = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.hub = self
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.cdn = "http://localhost:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def requests(self, method=None, contains=None):
        with self.lock:
            return [r for r in self.log if (method is None or r[0] == method) and (contains is None or contains in r[1])]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    @property
    def hub(self):
        return self.server.hub

    def do_HEAD(self):
        self.route(head=True)

    def do_GET(self):
        self.route(head=False)

    def send(self, status, body=b"", headers=(), head=False, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def error(self, status, code, message, head, extra=()):
        body = json.dumps({"error": message}).encode()
        self.send(status, body, [("X-Error-Code", code), ("X-Error-Message", message), *extra], head)

    def token(self):
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def repo_or_error(self, repo_id, head):
        """The repository if this caller may read it, else answers the error and returns None."""
        repo = self.hub.repos.get(repo_id)
        token = self.token()
        if repo is None:
            if token is None:
                self.error(401, "RepoNotFound", "Repository not found", head)
            else:
                self.error(404, "RepoNotFound", "Repository not found", head)
            return None
        if repo.gated and token != GOOD_TOKEN:
            msg = "Access to model %s is restricted. You must have access to it and be authenticated to access it." % repo_id
            self.error(401 if token is None else 403, "GatedRepo", msg, head)
            return None
        return repo

    def revision_or_error(self, repo, rev, head):
        if rev not in repo.revisions:
            self.error(404, "RevisionNotFound", "Invalid rev id: %s" % rev, head)
            return False
        return True

    def route(self, head):
        parsed = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parsed.path)
        query = urllib.parse.parse_qs(parsed.query)
        with self.hub.lock:
            self.hub.log.append((self.command, self.path, dict(self.headers.items())))
        parts = path.strip("/").split("/")
        if "org/renamed" in path:  # a renamed repository: the hub answers 307 to the new name
            return self.send(307, b"", [("Location", self.path.replace("org/renamed", "org/tiny"))], head)
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo_id, kind = "/".join(parts[2:4]), parts[4]
            rev = urllib.parse.unquote(parsed.path.split("/")[6] if len(parsed.path.split("/")) > 6 else "")
            repo = self.repo_or_error(repo_id, head)
            if repo is None or not self.revision_or_error(repo, rev, head):
                return
            if kind == "revision":
                return self.model_info(repo, head)
            return self.tree(repo, rev, int(query.get("cursor", ["0"])[0]), head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, file_path = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            repo = self.repo_or_error(repo_id, head)
            if repo is None or not self.revision_or_error(repo, rev, head):
                return
            return self.resolve(repo, file_path, head)
        if len(parts) == 2 and parts[0] == "cdn":
            return self.cdn(parts[1], head)
        self.send(404, b"not found", head=head, content_type="text/plain")

    def model_info(self, repo, head):
        info = {"_id": "6600" + repo.commit[:20], "id": repo.repo_id, "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": repo.commit, "private": False,
                "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": ["safetensors"], "library_name": "transformers",
                "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
        self.send(200, json.dumps(info).encode(), head=head)

    def tree(self, repo, rev, cursor, head):
        folders = {p.rsplit("/", 1)[0] for p in repo.files if "/" in p}
        paths = sorted(set(repo.files) | folders)
        page = [repo.entry(p) if p in repo.files else
                {"type": "directory", "oid": git_blob_sha1(p.encode()), "size": 0, "path": p}
                for p in paths[cursor:cursor + TREE_PAGE]]
        headers = []
        if cursor + TREE_PAGE < len(paths):
            nxt = "%s/api/models/%s/tree/%s?recursive=true&expand=false&cursor=%d" % (
                self.hub.url, repo.repo_id, rev, cursor + TREE_PAGE)
            headers.append(("Link", '<%s>; rel="next"' % nxt))
        self.send(200, json.dumps(page).encode(), headers, head)

    def resolve(self, repo, file_path, head):
        common = [("X-Repo-Commit", repo.commit)]
        if file_path not in repo.files:
            return self.error(404, "EntryNotFound", "Entry not found", head, common)
        data = repo.files[file_path]
        if file_path in repo.lfs:
            sha = hashlib.sha256(data).hexdigest()
            pointer = lfs_pointer(data)
            location = "%s/cdn/%s?sig=mock" % (self.hub.cdn, sha)
            return self.send(302, b"", common + [
                ("ETag", '"%s"' % git_blob_sha1(pointer)), ("X-Linked-Etag", '"%s"' % sha),
                ("X-Linked-Size", str(len(data))), ("Location", location)], head)
        self.send(200, data, common + [("ETag", '"%s"' % git_blob_sha1(data)), ("Accept-Ranges", "bytes")], head,
                  content_type="text/plain")

    def cdn(self, sha, head):
        data = self.hub.by_sha256.get(sha)
        if data is None:
            return self.send(404, b"no such object", head=head, content_type="text/plain")
        if sha in self.hub.corrupt:
            data = bytes(b ^ 0x5A for b in data)
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
        status = 206 if rng else 200
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"%s"' % sha)
        if rng:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        self.end_headers()
        if head:
            return
        with self.hub.lock:
            cut = sha in self.hub.cut_once
            self.hub.cut_once.discard(sha)
        if cut:
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        for off in range(0, len(body), 65536):
            if self.hub.delay:
                time.sleep(self.hub.delay)
            self.wfile.write(body[off:off + 65536])


if __name__ == "__main__":
    with MockHub() as hub:
        print("mock hub at %s (HF_ENDPOINT=%s); token for org/gated: %s" % (hub.url, hub.url, GOOD_TOKEN), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
