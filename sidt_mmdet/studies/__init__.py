"""Studies as library functions that write JSON, Markdown and PNG (tools stay thin)."""
