"""Deliver stage: mail a built issue to every reader, exactly once.

What it does, in order, for `pipeline send --date D` (and for the scheduler, both through
`pipeline.app.Pipeline.send`, which loads the stored issue: deliver never composes nor fetches):

1. `prepare_mailing` (send.py): read the recipients file (recipients.py), check the
   unsubscribe secret, render the issue for email;
2. `send_mailing` (send.py): skip suppressed addresses and readers whose topics are not in the
   issue; for each remaining reader, one MIME message addressed to that reader alone
   (message.py), sent over one reused SMTP connection at a bounded rate (transport.py);
   `write_outbox` writes them to files instead (the dry run).

Exactly once. Each attempt is written to the store as 'sending' BEFORE the first SMTP command
of its transaction, marked `handed_over` just before the end of the message data goes out, and
finished as 'sent', 'failed-permanent' or 'failed-temporary' once the server has answered.
On resume (`pipeline send --date D` again):

* 'sent' and 'failed-permanent' rows are skipped;
* 'failed-temporary' rows and 'sending' rows WITHOUT `handed_over` are sent again: the server
  never received the end of their data, and SMTP delivers nothing before it does;
* 'sending' rows WITH `handed_over` are the one window where the server may have accepted the
  message while we never learned it (crash or broken connection between the final "." and the
  recorded reply). They are NOT resent automatically, since the issue requires "never twice":
  they are reported with their Message-ID, to look up in the mail server's log; the operator
  then records what the log says (`--confirm-delivered MESSAGE-ID`: 'sent', never mailed again;
  `--confirm-lost MESSAGE-ID`: mailed again by that send, same Message-ID), or
  `--resend-uncertain` sends them all again.

The caller holds the send lock (`pipeline.lock.exclusive` on `<db>.send-lock`), which keeps two
sends from working on the same store at once, and makes the store's commits durable
(`Store.durable_commits`) so that a power cut cannot forget a 'sent'.
Credentials come from environment variables only and are never printed, logged or stored.
"""
from pipeline.deliver.message import (
    UnsubscribeLinks,
    UnsubscribeRoute,
    build_message,
    new_message_id,
    subject_for,
    unsubscribe_links,
    unsubscribe_route,
    unsubscribe_token,
    unsubscribe_token_matches,
)
from pipeline.deliver.recipients import (
    Recipient,
    add_recipient,
    issue_topics,
    load_recipients,
    remove_recipient,
    wants_issue,
)
from pipeline.deliver.send import (
    DeliveryEvent,
    DeliveryReport,
    Mailing,
    prepare_mailing,
    queue_mailing,
    send_batch,
    send_mailing,
    send_test,
    settle,
    settle_findings,
    summarize_delivery,
    write_outbox,
)
from pipeline.deliver.transport import Credentials, SmtpTransport, credentials_from_env

__all__ = [
    "Credentials",
    "DeliveryEvent",
    "DeliveryReport",
    "Mailing",
    "Recipient",
    "SmtpTransport",
    "UnsubscribeLinks",
    "UnsubscribeRoute",
    "add_recipient",
    "build_message",
    "credentials_from_env",
    "issue_topics",
    "load_recipients",
    "new_message_id",
    "prepare_mailing",
    "queue_mailing",
    "remove_recipient",
    "send_batch",
    "send_mailing",
    "send_test",
    "settle",
    "settle_findings",
    "subject_for",
    "summarize_delivery",
    "unsubscribe_links",
    "unsubscribe_route",
    "unsubscribe_token",
    "unsubscribe_token_matches",
    "wants_issue",
    "write_outbox",
]
