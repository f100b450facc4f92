"""The operations: every action a person or a timer triggers, as plain functions that take their
collaborators (a database session or store, a transport, `now`, the settings) as arguments. The
doors (cli/, web/, tasks.py) only translate arguments, HTTP requests and task messages into calls
of these functions; see docs/architecture.md."""
