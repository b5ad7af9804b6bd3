#!/usr/bin/env python3
"""Plaintext SMTP sink for boot-test.sh: the legacy MTA behind the appliance.

    sink.py PORT DIR      listen on 127.0.0.1:PORT, write each message to DIR/NNN.eml

Speaks just enough SMTP (RFC 5321) for a proxied session: EHLO/HELO, MAIL, RCPT, DATA, RSET,
NOOP, QUIT. It offers no STARTTLS, like the MTAs the proxy fronts. Prints "ready" once listening.
"""
import os
import socketserver
import sys
import threading

COUNTER = iter(range(1, 1_000_000))
LOCK = threading.Lock()


class Session(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self.reply("220 sink.boot-test ESMTP sink")
        envelope = []
        while True:
            raw = self.rfile.readline(4096)
            if not raw:
                return
            cmd = raw.decode("utf-8", "replace").strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-sink.boot-test")
                self.reply("250-PIPELINING")
                self.reply("250 8BITMIME")
            elif verb == "HELO":
                self.reply("250 sink.boot-test")
            elif verb in ("MAIL", "RCPT"):
                envelope.append(cmd)
                self.reply("250 2.1.0 Ok")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while True:
                    line = self.rfile.readline(65536)
                    if not line or line in (b".\r\n", b".\n"):
                        break
                    lines.append(line[1:] if line.startswith(b"..") else line)
                with LOCK:
                    n = next(COUNTER)
                path = os.path.join(self.server.spool, "%03d.eml" % n)
                with open(path + ".tmp", "wb") as f:
                    for e in envelope:
                        f.write(b"X-Envelope: " + e.encode() + b"\r\n")
                    f.writelines(lines)
                os.rename(path + ".tmp", path)
                envelope = []
                self.reply("250 2.0.0 Ok: queued as SINK%03d" % n)
            elif verb == "RSET":
                envelope = []
                self.reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Command not recognized")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    port, spool = int(sys.argv[1]), sys.argv[2]
    os.makedirs(spool, exist_ok=True)
    server = Server(("127.0.0.1", port), Session)
    server.spool = spool
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
