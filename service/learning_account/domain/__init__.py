"""The pure rules core: standard library only, integer quarter-credits, no I/O.

`model` holds commands, state and events; `rules.decide` applies a command; `statement`
derives the read models.
"""
