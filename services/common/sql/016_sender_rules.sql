-- An organization's rules for inbound mail (SPEC 2, "Sender rule"): block an address or a domain (and
-- its subdomains), or allow some: once any allow rule exists, mail from anyone else is refused. Mail
-- refused by them is recorded.
CREATE TABLE sender_rules (
    org_id      uuid NOT NULL,
    pattern     text NOT NULL,                   -- lower-cased: an address, or a domain
    action      text NOT NULL CHECK (action IN ('allow', 'block')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, pattern)
);
CREATE TABLE refused_mail (
    id          bigserial PRIMARY KEY,
    org_id      uuid NOT NULL,
    sender      text NOT NULL,
    recipient   text NOT NULL,
    stage       text NOT NULL CHECK (stage IN ('rcpt', 'data')),
    rule        text,                            -- the block rule, or NULL: not on the allow list
    refused_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refused_mail_org ON refused_mail (org_id, refused_at DESC);
