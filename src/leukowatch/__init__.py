"""leukowatch."""
