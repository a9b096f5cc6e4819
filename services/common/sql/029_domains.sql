-- Domains an organization has proven it holds (SPEC 5a): a DNS TXT record with the token it was given,
-- or the operator's grant. An organization may use addresses (identity handles, pool mailboxes, inboxes)
-- only at a domain it holds, or at a parent's subdomain; a verified domain belongs to one organization.
-- Pending claims of one domain may be many: the first to prove it holds it.
CREATE TABLE domains (
    org_id      uuid NOT NULL REFERENCES organizations (id),
    domain      text NOT NULL,                -- lower-case IDNA (ASCII) form, no trailing dot
    token       text NOT NULL,                -- the TXT record's value is sendstream-verification=<token>
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'verified')),
    verified_by text CHECK (verified_by IN ('dns', 'operator')),
    checked_at  timestamptz,                  -- the latest DNS check, and what it found
    last_check  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    verified_at timestamptz,
    PRIMARY KEY (org_id, domain)
);
CREATE UNIQUE INDEX domains_held ON domains (domain) WHERE status = 'verified';
