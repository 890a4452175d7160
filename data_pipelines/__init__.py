"""Offline, seeded sample generators: RULER-style synthetic tasks, dialogues
and long documents, as JSONL records of `samples.Sample`."""
