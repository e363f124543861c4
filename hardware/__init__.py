"""hardware/: measure real devices, serve experts with metered energy, run moe2sim policies live,
and compare simulated against measured records. Imports moe2sim, never the reverse.

    python -m hardware collect | fit | serve | live | compare   (also `moe2sim-hw`)
"""
