"""The pure rules core: standard library only, integer quarter-credits, no I/O, no clock.

`model` holds the commands and the account state, `events` what a step records and the
`Decision` carrying it; `rules.decide` applies a command: each step checks its `guards`, then
changes a `step.Step` (R6's arithmetic in `rebuilding`, old units' facts in `unit_facts`);
`statement` derives the read models. `values` holds the core's kinds (its enumerations) and
`immutable`, the decorator of its value classes.
"""
