"""The bottom layer: errors, typed configs, the runtime and mesh, the run directory and its checkpoint store,
stop signals, events, and the hooks tests use to inject faults. Imports no other ``scaling`` package."""
