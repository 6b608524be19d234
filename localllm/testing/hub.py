"""A fake Hugging Face Hub on 127.0.0.1 for tests: the listing, resolve and range endpoints.

    with FakeHub() as hub:
        hub.add_file("owner/Repo-GGUF", "model-Q4_1.gguf", path_or_bytes)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)   # FakeHub sets nothing global itself
        ...
        hub.bytes_sent["/owner/Repo-GGUF/resolve/<commit>/model-Q4_1.gguf"], hub.requests

Endpoints, shaped as huggingface_hub 2.x parses them:

    GET  /api/models/{repo}[/revision/{rev}][?blobs=true]   model_info JSON: id, sha, private,
         gated, siblings [{rfilename, size, blobId, lfs: {sha256, size, pointerSize}}]
    GET  /api/models/{repo}/tree/{rev}[/{folder}]           list_repo_tree JSON: [{type, path,
         size, oid, lfs: {oid, size, pointerSize}}]
    HEAD /{repo}/resolve/{rev}/{file}                       X-Repo-Commit, ETag, X-Linked-Etag
         (the LFS sha256), X-Linked-Size, Content-Length, Accept-Ranges
    GET  /{repo}/resolve/{rev}/{file}                       the body; `Range: bytes=a-b` or
         `bytes=a-` gives 206 + Content-Range (416 past the end)

A revision is "main" or the repository's commit; anything else is 404 RevisionNotFound.
Errors carry the Hub's X-Error-Code: an unknown or private repository is 401 RepoNotFound,
a gated one (`gated`) 401 GatedRepo for everything, a missing file 404 EntryNotFound.

Switches (plain attributes, change them any time): `gated` and `private` (sets of repo ids),
`ignore_range` (answer a Range request with 200 and the whole body, as some servers do),
`cut_after` (close every body after that many bytes), `cut_next_get_after` (the same, once),
`redirect` (resolve GETs answer 302 to /cdn/..., as the real Hub sends LFS files to a CDN), and
`add_file(..., sha256=...)` to publish a wrong sha256. What it saw: `requests` (every request
as (method, path, lower-cased headers), telemetry left out), `bytes_sent` (body bytes per path,
query string dropped) and `file_requests()`/`api_requests()`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeFile", "FakeHub", "FakeRepo"]

_CHUNK = 1 << 20
# huggingface_hub fetches this once a day from the endpoint it saw at import: not a test's request
_TELEMETRY = ("/api/agent-harnesses",)


@dataclass
class FakeFile:
    """One file of a fake repository: its bytes (in memory or on disk) and what the Hub says of it."""

    source: bytes | Path
    size: int
    sha256: str  # what the listing and the ETag publish (a wrong one on purpose is allowed)
    lfs: bool = True

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file."""
        if isinstance(self.source, bytes):
            return self.source[start:end]
        with open(self.source, "rb") as f:
            f.seek(start)
            return f.read(end - start)


@dataclass
class FakeRepo:
    """A repository: its commit and files by name."""

    repo: str
    commit: str
    files: dict[str, FakeFile] = field(default_factory=dict)


def _sha256_of(source: bytes | Path) -> str:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    h = hashlib.sha256()
    with open(source, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class FakeHub:
    """A ThreadingHTTPServer on 127.0.0.1 that serves repositories made of local files."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.gated: set[str] = set()
        self.private: set[str] = set()
        self.ignore_range = False
        self.redirect = False
        self.cut_after: int | None = None
        self.cut_next_get_after: int | None = None
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.bytes_sent: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sha_cache: dict[tuple[str, int], str] = {}

    # -- content -------------------------------------------------------------------------

    def add_repo(self, repo: str, commit: str | None = None) -> FakeRepo:
        """The repository `repo` (created empty with a commit derived from its name if new)."""
        if repo not in self.repos:
            commit = commit or hashlib.sha1(repo.encode()).hexdigest()
            self.repos[repo] = FakeRepo(repo, commit)
        elif commit:
            self.repos[repo].commit = commit
        return self.repos[repo]

    def add_file(
        self, repo: str, filename: str, source: bytes | str | Path, *, sha256: str | None = None, lfs: bool = True
    ) -> FakeFile:
        """Serve `source` (bytes or a file path, read on demand) as `repo`/`filename`.

        `sha256` overrides what the Hub publishes (to test a wrong hash); by default the real one.
        """
        src: bytes | Path = source if isinstance(source, bytes) else Path(source)
        size = len(src) if isinstance(src, bytes) else src.stat().st_size
        if sha256 is None:
            key = (str(src), size) if isinstance(src, Path) else None
            if key is not None and key in self._sha_cache:
                sha256 = self._sha_cache[key]
            else:
                sha256 = _sha256_of(src)
                if key is not None:
                    self._sha_cache[key] = sha256
        f = FakeFile(src, size, sha256, lfs)
        self.add_repo(repo).files[filename] = f
        return f

    def file_path(self, repo: str, filename: str, revision: str | None = None) -> str:
        """The resolve path (as counted in `bytes_sent`) of a file at a revision (the commit by default)."""
        rev = revision or self.repos[repo].commit
        return f"/{repo}/resolve/{rev}/{filename}"

    # -- what it saw ---------------------------------------------------------------------

    def file_requests(self) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if "/resolve/" in r[1] or r[1].startswith("/cdn/")]

    def api_requests(self) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if r[1].startswith("/api/")]

    def total_bytes_sent(self) -> int:
        return sum(self.bytes_sent.values())

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes_sent.clear()

    # -- server --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not started (use it as a context manager, or call start())")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="FakeHub", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    # -- helpers -------------------------------------------------------------------------

    def _record(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if not path.startswith(_TELEMETRY):
            with self.hub.lock:
                self.hub.requests.append((self.command, path, {k.lower(): v for k, v in self.headers.items()}))
        return path, parse_qs(parts.query)

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _repo(self, repo: str) -> FakeRepo | None:
        """The repository if it may be seen; else the error is sent and None returned."""
        hub = self.hub
        found = hub.repos.get(repo)
        if found is None or repo in hub.private:
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        if repo in hub.gated:
            why = f"Access to model {repo} is restricted. You must have access to it and be authenticated."
            self._error(401, "GatedRepo", why)
            return None
        return found

    def _revision(self, repo: FakeRepo, rev: str) -> bool:
        if rev in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return False

    # -- endpoints -----------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path, query = self._record()
        if path.startswith(_TELEMETRY):
            return self._json({})
        if path.startswith("/api/models/"):
            return self._api(path[len("/api/models/") :], query)
        if path.startswith("/cdn/"):
            return self._resolve(path[len("/cdn") :], counted=path, cdn=True)
        if "/resolve/" in path:
            return self._resolve(path, counted=path)
        self._error(404, None, "not found")

    def _api(self, rest: str, query: dict[str, list[str]]) -> None:
        # {owner}/{name}, {owner}/{name}/revision/{rev}, {owner}/{name}/tree/{rev}[/{folder}]
        parts = rest.split("/")
        repo = self._repo("/".join(parts[:2]))
        if repo is None:
            return
        tail = parts[2:]
        if not tail:
            return self._json(self._model_info(repo, blobs=query.get("blobs", [""])[0].lower() == "true"))
        if tail[0] == "revision" and len(tail) >= 2:
            if self._revision(repo, "/".join(tail[1:])):
                self._json(self._model_info(repo, blobs=query.get("blobs", [""])[0].lower() == "true"))
            return
        if tail[0] == "tree" and len(tail) >= 2:
            if self._revision(repo, tail[1]):
                folder = "/".join(tail[2:]).strip("/")
                self._json(self._tree(repo, folder))
            return
        self._error(404, None, "not found")

    def _model_info(self, repo: FakeRepo, *, blobs: bool) -> dict[str, Any]:
        siblings = []
        for name, f in sorted(repo.files.items()):
            entry: dict[str, Any] = {"rfilename": name}
            if blobs:
                entry["size"] = f.size
                entry["blobId"] = hashlib.sha1(f.sha256.encode()).hexdigest()
                if f.lfs:
                    entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(entry)
        return {
            "_id": repo.commit[:24],
            "id": repo.repo,
            "modelId": repo.repo,
            "author": repo.repo.split("/")[0],
            "sha": repo.commit,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": ["gguf"],
            "lastModified": "2025-01-01T00:00:00.000Z",
            "siblings": siblings,
        }

    def _tree(self, repo: FakeRepo, folder: str) -> list[dict[str, Any]]:
        out = []
        for name, f in sorted(repo.files.items()):
            if folder and not name.startswith(folder + "/"):
                continue
            entry: dict[str, Any] = {
                "type": "file",
                "oid": hashlib.sha1(f.sha256.encode()).hexdigest(),
                "size": f.size,
                "path": name,
            }
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            out.append(entry)
        return out

    def _resolve(self, path: str, *, counted: str, cdn: bool = False) -> None:
        head, _, filename = path.lstrip("/").partition("/resolve/")
        rev, _, filename = filename.partition("/")
        repo = self._repo(head)
        if repo is None or not self._revision(repo, rev):
            return
        f = repo.files.get(filename)
        if f is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", repo.commit)
        hub = self.hub
        if self.command == "GET" and hub.redirect and not cdn:
            self.send_response(302)
            self.send_header("Location", f"{hub.url}/cdn{path}")
            self._file_headers(repo, f)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.command == "HEAD":
            self.send_response(200)
            self._file_headers(repo, f)
            self.send_header("Content-Length", str(f.size))
            self.end_headers()
            return
        start, end = 0, f.size  # end exclusive
        rng = None if hub.ignore_range else self.headers.get("Range")
        if rng:
            try:
                a, _, b = rng.strip().removeprefix("bytes=").partition("-")
                start = int(a)
                end = min(int(b) + 1, f.size) if b else f.size
            except ValueError:
                return self._error(400, None, f"bad Range {rng!r}")
            if start >= f.size or end <= start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{f.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{f.size}")
        else:
            self.send_response(200)
        self._file_headers(repo, f)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        with hub.lock:
            cut, hub.cut_next_get_after = hub.cut_next_get_after, None
            if cut is None:
                cut = hub.cut_after
        stop = end if cut is None else min(end, start + cut)
        pos = start
        try:
            while pos < stop:
                chunk = f.read(pos, min(stop, pos + _CHUNK))
                self.wfile.write(chunk)
                pos += len(chunk)
                with hub.lock:
                    hub.bytes_sent[counted] += len(chunk)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: what it wants
            self.close_connection = True
            return
        if stop < end:
            self.close_connection = True  # the body ends early: the client sees a broken transfer

    def _file_headers(self, repo: FakeRepo, f: FakeFile) -> None:
        etag = f.sha256 if f.lfs else hashlib.sha1(f.sha256.encode()).hexdigest()
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Linked-Etag", f'"{etag}"')
        self.send_header("X-Linked-Size", str(f.size))
        self.send_header("Accept-Ranges", "bytes")
