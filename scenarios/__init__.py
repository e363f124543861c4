"""The bundled scenarios; installed as the package moe2sim.bundled.scenarios (moe2sim.data.bundled finds them)."""
