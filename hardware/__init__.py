"""hardware/: measure real devices and run moe2sim policies live (imports moe2sim, never the reverse).

Empty frame for now: energy meters, LLM backends and the collect/fit/serve/live/compare
commands arrive with the hardware issue.
"""
