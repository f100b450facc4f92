"""The pure core: campaign model, segment rules, schedule math, rendering, message building.

Nothing in this package does I/O, reads the environment or the clock; `now` is always an argument.
"""
