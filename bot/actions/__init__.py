"""Actions (issue 34): declared next to the FAQ, they ask for slots, call an HTTP API and
answer from its JSON. `spec` reads and checks them, `templates` renders calls and replies,
`caller` makes the calls safely; `demo_shop` is the sample FAQ's demo API."""
