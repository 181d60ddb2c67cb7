"""The pure de-identification engine: no network, no database, no clock, no global state."""
