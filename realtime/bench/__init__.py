"""``stylecam bench``: runner, modes, measurement, schema, reports, environment."""
