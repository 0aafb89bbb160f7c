"""Analysis of trained ensembles: the K x objective study (study) and collapse diagnostics
(diagnose)."""
