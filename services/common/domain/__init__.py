"""Domain code with I/O that two or more services share: the intake of received mail (receiving/), the
blob store and large bodies, re-drive, the decisions' notifications, sent recipients, the views as the
API reads them, webhook queues and signing, unsubscribe tokens, signed links, time zones. It sits apart
from the plumbing every service needs to run (settings, logging, the database, the consumer machinery),
in services/common/ like the rest of what services share: no service imports another."""
