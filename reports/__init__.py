"""Reports: the KPIs and the CJ/T 292 evaluation, read from calls and orders."""
