#!/usr/bin/env python3
"""Writes the seed inputs of each target into corpus/<target>/seed-*: real SMTP lines, replies,
EHLO responses and bodies, wrapped in the header each target reads (see src/lib.rs `Input`)."""
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

SESSION = (b"EHLO client.example\r\nMAIL FROM:<alice@secure.test> SIZE=1000\r\n"
           b"RCPT TO:<bob@example.org>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n")
BARE_LF = b"EHLO x\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\r\n"
EHLO_POSTFIX = (b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
                b"250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
                b"250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n")
REPLIES = [
    b"220 mx.example.org ESMTP Postfix (Debian/GNU)\r\n",
    EHLO_POSTFIX,
    b"250 2.1.0 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
    b"250 2.0.0 Ok: queued as 4Q1x2y3z\r\n221 2.0.0 Bye\r\n",
    b"421 4.4.2 mx.example.org Error: timeout exceeded\r\n",
    b"550-5.1.1 <nobody@example.org>: Recipient address rejected:\r\n550 5.1.1 User unknown\r\n",
    b"250\r\n250-\r\n250 x\n",
    b"220 a\r\n250-b\r\n251 c\r\n",
    b"220-a\r\n220+b\r\n",
    b"99 short\r\n",
]
COMMANDS = [
    b"EHLO client.example", b"HELO x", b"STARTTLS", b"STARTTLS now",
    b"MAIL FROM:<alice@Secure.Test>", b"MAIL FROM:<alice@secure.test.> SIZE=10",
    b"mail from: <a@b.example>", b"MAIL FROM:<>", b"MAIL\tFROM:<alice@secure.test>",
    b"MAIL  FROM:<alice@secure.test>", b"MAIL FROM:< alice@secure.test >",
    b"MAIL FROM:<@relay.example:u@final.example>", b"MAIL FROM:<\"odd@local\"@quoted.example>",
    b"MAIL FROM:alice@bare.example", b"MAIL FROM:<alice@secure.test> (comment)",
    b"RCPT TO:<postmaster>", b"RCPT TO:<u@d.example> NOTIFY=NEVER", b"RCPT\t\tTO:<u@d.example>",
    b"DATA", b"BDAT 100", b"BDAT 0 LAST", b"BDAT 1 LAST extra", b"RSET", b"NOOP", b"QUIT",
    b"AUTH PLAIN", b"VRFY postmaster", b"",
]
BODIES = [
    b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    b".\r\n",
    b"..dot-stuffed\r\n.\r\n",
    b"line\n.\r\n",
    b"line\r\n.\n",
    b"a\r\n.\r\r\n.\r\n",
    b"\r\n\r\n.\r\n",
]


def write(target, payload):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(payload).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(payload)


def sizes(*s):
    return bytes([len(s)]) + bytes(s)


def line_reader(maxlen, piece, ops, repeat, pattern, tail=None, rounds=1):
    head = struct.pack("<H", maxlen - 1) + piece + bytes([len(ops)]) + bytes(ops)
    body = pattern if tail is None else pattern + b"\xff" + tail
    return head + struct.pack("<H", repeat) + bytes([rounds]) + body


for piece in (sizes(), sizes(1), sizes(0, 7), sizes(128 + 3)):
    write("line_reader", line_reader(2048, piece, [], 1, SESSION))
    write("line_reader", line_reader(2048, piece, [0, 0, 0, 0, 0xff, 0xc3], 1, SESSION))
write("line_reader", line_reader(512, sizes(), [], 1, BARE_LF))
# A line over the limit, then one that fits; a tail over the limit without LF.
write("line_reader", line_reader(2048, sizes(128 + 1), [], 3000, b"A", b"\r\nQUIT\r\n"))
write("line_reader", line_reader(512, sizes(100), [], 600, b"A"))
# Trickled: one byte per read (the rescan case of issue 15).
write("line_reader", line_reader(4096, sizes(1), [], 4000, b"x", b"\r\n"))
# Bulk reads after a long line: the buffer's spare capacity (the read bound of issue 15).
write("line_reader", line_reader(65536, sizes(255), [], 6000, b"0123456789", b"\r\nNOOP\r\n"))
# Lines of 65535 bytes (as many as the stream cap allows), one byte per read: quadratic
# rescans time out.
write("line_reader", line_reader(65536, sizes(1), [], 65533, b"x", b"\r\n", rounds=16))

for c in COMMANDS:
    write("command", c)

for r in REPLIES:
    write("reply", struct.pack("<H", 2047) + sizes() + bytes([1]) + r)
    write("reply", struct.pack("<H", 511) + sizes(1, 0, 5) + bytes([1]) + r)
# A reply with more continuation lines than allowed.
write("reply", struct.pack("<H", 2047) + sizes() + bytes([200]) + b"250-x\r\n\xff250 y\r\n")

for offer in (0, 1):
    lines = [l[4:].rstrip(b"\r") for l in EHLO_POSTFIX.split(b"\n") if l]
    write("ehlo", struct.pack("<H", 50) + bytes([offer]) + b"\n".join(lines))
    write("ehlo", struct.pack("<H", 50) + bytes([offer]) + b"mx.example.org\nstarttls\nSIZE 1")
    write("ehlo", struct.pack("<H", 50) + bytes([offer]) + b"mx.example.org")
    write("ehlo", struct.pack("<H", 300) + bytes([offer]) + b"mx.example.org Hello")

for b in BODIES:
    write("end_of_data", sizes() + bytes([1]) + b)
    write("end_of_data", sizes(1) + bytes([1]) + b)
    write("end_of_data", sizes(2, 3) + bytes([1]) + b)
write("end_of_data", sizes(128 + 3) + bytes([255]) + b"0123456789abcdef\r\n\xff.\r\n")

# tls_report: the first byte picks the form (0: e-mail, 1: .json, 2: .json.gz).
import base64
import gzip
REPORT = (b'{"organization-name":"Google Inc.","date-range":{"start-datetime":"2026-12-05T00:00:00Z",'
          b'"end-datetime":"2026-12-05T23:59:59Z"},"contact-info":"smtp-tls-reporting@google.com",'
          b'"report-id":"2026-12-05T00:00:00Z_example.org","policies":[{"policy":{"policy-type":"sts",'
          b'"policy-string":["version: STSv1","mode: enforce","mx: mx1.example.org","max_age: 86400"],'
          b'"policy-domain":"example.org","mx-host":["mx1.example.org"]},"summary":{'
          b'"total-successful-session-count":120,"total-failure-session-count":3},"failure-details":['
          b'{"result-type":"certificate-expired","sending-mta-ip":"209.85.220.41",'
          b'"receiving-mx-hostname":"mx1.example.org","receiving-ip":"192.0.2.25","failed-session-count":3}]}]}')
GZ = gzip.compress(REPORT, mtime=0)
write("tls_report", b"\x01" + REPORT)
write("tls_report", b"\x02" + GZ)
for part_type, enc, body in ((b"application/tlsrpt+gzip", b"base64", base64.encodebytes(GZ)),
                             (b"application/tlsrpt+json", b"7bit", REPORT)):
    write("tls_report", b"\x00" + b"Subject: Report Domain: example.org\r\n"
          b"Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b1\"\r\n\r\n"
          b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\nContent-Type: " + part_type +
          b"\r\nContent-Transfer-Encoding: " + enc + b"\r\n\r\n" + body + b"\r\n--b1--\r\n")
