"""hoop's API as recorded from a real hoop (recordings/*.json), the stand-in that serves them
(replay.py) and the script that records psql's real output for them (psql_outputs.py)."""
