"""Renderers: one Assessment, many forms (text, JSON, FHIR, HTML/PDF report, CDS card)."""
