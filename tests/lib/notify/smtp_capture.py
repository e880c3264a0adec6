"""A real SMTP server (aiosmtpd) for the notification tests.

Usage: smtp_capture.py OUT.jsonl [CERT KEY]
Listens on 127.0.0.1 (a free port, printed as "port N" once ready) and
appends one JSON line per accepted message: envelope sender, recipients and
the raw message as received. Recipients starting with "refuse" get 550,
"busy" 451. With CERT and KEY it offers STARTTLS.
"""
import asyncio
import json
import ssl
import sys

from aiosmtpd.smtp import SMTP


class Capture:
    def __init__(self, path):
        self.path = path

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.startswith("refuse"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("busy"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "mail_options": envelope.mail_options,
            "tls": session.ssl is not None,
            "helo": session.host_name,
            "content": envelope.original_content.decode("utf-8", "replace"),
        }
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return "250 2.0.0 stored"


async def main():
    handler = Capture(sys.argv[1])
    context = None
    if len(sys.argv) > 3:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="capture.test", tls_context=context,
                     decode_data=False),
        "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    # Stop when the test closes our standard input.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(main())
