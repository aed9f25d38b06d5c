"""Where frames come from (sources) and where results go (sinks)."""
