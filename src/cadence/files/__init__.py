"""Reading what staff write in ``campaigns/``: campaign, signup form and newsletter files, the
sender file and the guide pages, loaded into the core's objects with the file, field and line
of every problem. I/O lives here so that core/ stays pure."""
