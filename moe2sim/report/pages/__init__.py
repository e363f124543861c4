"""The report's pages, one module each (run, sweep, windows, live, compare), and the page writer they share."""
