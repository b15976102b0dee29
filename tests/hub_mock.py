"""A local stand-in for the Hugging Face Hub's HTTP API (the calls huggingface_hub makes to create a repository
and commit files), on 127.0.0.1 in a daemon thread. It records every request and stores committed files; every
file is asked for inline ("regular" upload mode), so no LFS or Xet storage is involved."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubMock:
    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        self.files: dict[str, bytes] = {}
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                mock.requests.append(("GET", self.path))
                self._reply(404, {"error": "not found"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                mock.requests.append(("POST", self.path))
                if self.path == "/api/repos/create":
                    name = json.loads(body)
                    return self._reply(200, {"url": f"{mock.url}/{name.get('organization')}/{name.get('name')}"})
                if "/preupload/" in self.path:
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                if "/commit/" in self.path:
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item.get("key") == "file":
                            v = item["value"]
                            mock.files[v["path"]] = base64.b64decode(v["content"])
                    return self._reply(200, {"commitOid": "0" * 40, "commitUrl": f"{mock.url}/me/x/commit/" + "0" * 40})
                self._reply(404, {"error": f"unexpected {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> "HubMock":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
