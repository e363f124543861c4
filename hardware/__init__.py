"""moe2sim.hardware (the repository's hardware/ folder): measure real devices, serve experts with metered
energy, run moe2sim policies live, and compare simulated against measured records. Imports the rest of
moe2sim, never the reverse; a wheel installs it as moe2sim.hardware, so no generic top-level name.

    python -m moe2sim.hardware collect | fit | serve | live | compare   (also `moe2sim-hw`)
"""
