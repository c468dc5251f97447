"""Pure clinical rules over observations: ranges, grading, differential, infection, causes, timeline."""
