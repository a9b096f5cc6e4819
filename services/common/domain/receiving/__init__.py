"""Receiving mail, shared by the inbound SMTP server and dispatch (mail between hosted addresses):
reading messages and reports with the standard `email` package, sender rules, and the intake that
keeps a message and puts its events on the log."""
