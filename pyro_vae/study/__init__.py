"""Studies: the study file (spec), running it (runner), and the claims its report judges (claims, statistics)."""
