"""The local development stack: what `make run`, the tests and the benches start on a machine without a
Kafka cluster or PostgreSQL (the embedded broker and database, the launcher, the SMTP and webhook
sinks). Production runs none of it, and its image does not carry it."""
