"""The bundled traces and profiles; installed as the package moe2sim.bundled.traces (moe2sim.data.bundled finds them)."""
