"""The production as a whole: its plan (every job and what it reads), the exposure tables and
tilepix maps the plan is built from, and the state of its jobs on disk."""
