-- capture_points: the capture point (the machine, hence the clock) that recorded each session.
-- In one tape every session shares one; when several tapes are read as one (analysis/views.py)
-- this is replaced by the tapes' own hosts.
CREATE OR REPLACE VIEW capture_points AS
SELECT session_id, '' AS capture FROM sessions;
