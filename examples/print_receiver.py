"""A stand-in webhook receiver with no dependencies: it prints every request's
headers and body and answers 200. Usage: python3 examples/print_receiver.py 5003"""

import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(f"{self.command} {self.path}", flush=True)
        for name, value in self.headers.items():
            print(f"{name}: {value}", flush=True)
        print(f"\n{body.decode('utf-8', 'replace')}\n", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):  # the request is printed above
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 5003
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
