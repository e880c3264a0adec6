// Sends one notification email through SMTP or sendmail, per its server URL.

import {
  envelopeAddress,
  formatEmail,
  newMessageId,
  splitAddresses,
} from "./email_message.ts";
import { parseMailServer } from "./mail_server.ts";
import { sendSmtp } from "./smtp_client.ts";
import { sendWithSendmail } from "./sendmail.ts";

/** An email notification sink, as in the specification. */
export interface EmailSink {
  from: string;
  /** One address or a comma-separated list. */
  to: string;
  /** smtp://, smtp+starttls://, smtps:// or sendmail:// URL. */
  server: string;
}

/** Options of sendEmail. */
export interface SendEmailOptions {
  /** Milliseconds since the epoch, for Date and Message-ID. */
  now: number;
  /** EHLO name and Message-ID domain; default "localhost". */
  hostname?: string;
  /** Extra trusted certificates (PEM) for SMTP over TLS. */
  caCerts?: string[];
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Formats the message and hands it to the sink's mailer; returns its
 * Message-ID.
 * @throws {import("./email_message.ts").EmailFormatError} for bad addresses,
 * {import("./mail_server.ts").MailServerError} for a bad server URL,
 * {import("./smtp_client.ts").SmtpError} or
 * {import("./sendmail.ts").SendmailError} when delivery fails.
 */
export async function sendEmail(
  sink: EmailSink,
  content: { subject: string; text: string },
  options: SendEmailOptions,
): Promise<string> {
  const { now, hostname = "localhost", caCerts, timeoutMs, signal } = options;
  const server = parseMailServer(sink.server);
  const to = splitAddresses(sink.to);
  const messageId = newMessageId(now, hostname);
  const message = formatEmail({
    from: sink.from,
    to,
    subject: content.subject,
    text: content.text,
    date: now,
    messageId,
  });
  const envelope = {
    from: envelopeAddress(sink.from),
    to: to.map(envelopeAddress),
  };
  if (server.kind === "sendmail") {
    await sendWithSendmail(server.path, envelope, message, {
      timeoutMs,
      signal,
    });
  } else {
    await sendSmtp(envelope, message, {
      hostname: server.hostname,
      port: server.port,
      tls: server.tls,
      caCerts,
      heloName: hostname,
      timeoutMs,
      signal,
    });
  }
  return messageId;
}
