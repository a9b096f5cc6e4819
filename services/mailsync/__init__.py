"""Mailbox sync: the mail of pool mailboxes read back over IMAP (services/mailsync/app.py)."""
