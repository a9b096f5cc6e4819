"""Mail itself, with no I/O and no service in it: composing a message (`compose`), forwarding one
(`forward`), reading one (`parse`), delivery and feedback reports (`reports`), sender rules (`rules`),
and received HTML made safe to show (`html`). Every service that sends or receives mail uses it;
tests/unit/test_layout.py keeps it pure."""
